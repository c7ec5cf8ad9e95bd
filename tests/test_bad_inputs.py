"""Bad inputs, everywhere: each public entry point, given broken input, stops with one clear message that
names the problem, a non-zero exit status (or the documented exception for an API), and writes nothing
where its output would go.

The command-line cases call each CLI's `main(argv)` in this process, exactly what `python -m ...` runs
(each module's `__main__` block is `sys.exit(main())`), so that 40 cases cost seconds; a CLI that lets an
exception escape would print a raw traceback, and that fails here as an unexpected exception.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from .demo_utils import make_checkpoints, make_dataset


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    """Good and broken inputs, by name; `out` is where each command would write (must stay absent)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    tok, dyn = make_checkpoints(root / "ckpt")
    data = make_dataset(root)
    p = {"tok": tok, "dyn": dyn, "data": data, "missing": str(root / "missing"), "out": str(root / "out")}
    (root / "junk.pt").write_bytes(np.random.default_rng(0).bytes(300))
    p["junk"] = str(root / "junk.pt")
    good = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1000)}, "args": {}}, good)
    (root / "truncated.pt").write_bytes(good.getvalue()[:200])
    p["truncated"] = str(root / "truncated.pt")
    (root / "empty").mkdir()
    p["empty"] = str(root / "empty")
    (root / "notjson").mkdir()
    (root / "notjson" / "config.json").write_text("{not json")
    p["notjson"] = str(root / "notjson")
    # a checkpoint whose config disagrees with its weights (a wider model than the file holds)
    shutil.copytree(tok, root / "wide")
    cfg = json.loads((root / "wide" / "config.json").read_text())
    cfg["transformer"]["d_model"] *= 2
    (root / "wide" / "config.json").write_text(json.dumps(cfg))
    p["wide"] = str(root / "wide")
    # a checkpoint whose weights file is cut short
    shutil.copytree(tok, root / "cut")
    weights = root / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    p["cut"] = str(root / "cut")
    # a data set whose frames file is cut short, and one whose meta.json is random bytes
    shutil.copytree(data, root / "cutdata")
    frames = root / "cutdata" / "frames.u8"
    frames.write_bytes(frames.read_bytes()[:100])
    p["cutdata"] = str(root / "cutdata")
    shutil.copytree(data, root / "baddata")
    (root / "baddata" / "meta.json").write_bytes(np.random.default_rng(1).bytes(64))
    p["baddata"] = str(root / "baddata")
    (root / "src").mkdir()
    (root / "src" / "cartpole-swingup.pt").write_bytes((root / "truncated.pt").read_bytes())
    p["src"] = str(root / "src")
    return p


T = "dreamer4_torch.train"
J = "dreamer4_jax.train"
# (id, module, argv with {names} from `paths`, what the message must name)
CLI_CASES = [
    ("convert-missing-file", "convert", "upstream {missing} {out}", "does not exist"),
    ("convert-random-bytes", "convert", "upstream {junk} {out}", "cannot read"),
    ("convert-truncated", "convert", "upstream {truncated} {out}", "cannot read"),
    ("convert-not-a-checkpoint-dir", "convert", "torch-to-jax {empty} {out}", "config.json is missing"),
    ("convert-config-not-json", "convert", "torch-to-jax {notjson} {out}", "is not valid JSON"),
    ("convert-config-disagrees", "convert", "torch-to-jax {wide} {out}", "wide"),
    ("convert-truncated-weights", "convert", "torch-to-jax {cut} {out}", "cut"),
    ("convert-torch-as-jax", "convert", "jax-to-torch {tok} {out}", "params"),
    ("convert-unknown-command", "convert", "sideways {tok} {out}", "invalid choice"),
    ("train-missing-data", T, "tokenizer --data {missing} --out {out}", "--data"),
    ("train-zero-steps", T, "tokenizer --data {data} --out {out} --steps 0", "--steps"),
    ("train-nan-lr", T, "tokenizer --data {data} --out {out} --lr nan", "--lr"),
    ("train-negative-batch", T, "tokenizer --data {data} --out {out} --batch-size -3", "--batch-size"),
    ("train-unknown-preset", T, "tokenizer --data {data} --out {out} --preset nope", "unknown recipe 'nope'"),
    ("train-not-a-number", T, "tokenizer --data {data} --out {out} --steps many", "--steps"),
    ("train-data-not-a-dataset", T, "tokenizer --data {empty} --out {out} --preset tiny", "meta.json"),
    ("train-data-meta-garbage", T, "tokenizer --data {baddata} --out {out} --preset tiny", "meta.json"),
    ("train-data-frames-cut", T, "tokenizer --data {cutdata} --out {out} --preset tiny", "frames"),
    ("train-tokenizer-wrong-kind", T, "dynamics --data {data} --out {out} --tokenizer {dyn} --preset tiny",
     "holds a dynamics checkpoint"),
    ("train-tokenizer-missing", T, "dynamics --data {data} --out {out} --tokenizer {missing} --preset tiny",
     "does not exist"),
    ("train-tokenizer-weights-cut", T, "dynamics --data {data} --out {out} --tokenizer {cut} --preset tiny",
     "cut"),
    ("bc-dynamics-wrong-kind", T, "bc --data {data} --out {out} --tokenizer {tok} --dynamics {tok} --preset tiny",
     "holds a tokenizer checkpoint"),
    ("resume-nothing", T, "tokenizer --data {data} --out {out} --preset tiny --resume", "--resume"),
    ("jax-train-missing-data", J, "tokenizer --data {missing} --out {out}", "--data"),
    ("jax-train-torch-tokenizer", J, "dynamics --data {data} --out {out} --tokenizer {dyn} --preset tiny",
     "PyTorch checkpoint"),
    ("collect-unknown-task", "shared.data.collect", "--tasks no-such-task --episodes 1 --out {out}",
     "unknown task 'no-such-task'"),
    ("collect-negative-episodes", "shared.data.collect", "--tasks cartpole-swingup --episodes -1 --out {out}",
     "--episodes"),
    ("collect-zero-size", "shared.data.collect", "--tasks cartpole-swingup --episodes 1 --size 0 --out {out}",
     "--size"),
    ("check-missing", "shared.data.check", "{missing}", "no such dataset"),
    ("check-frames-cut", "shared.data.check", "{cutdata}", "frames"),
    ("check-meta-garbage", "shared.data.check", "{baddata}", "meta.json"),
    ("import-missing-src", "shared.data.import_upstream", "{missing} {out}", "no such directory"),
    ("import-truncated-raw", "shared.data.import_upstream", "{src} {out}", "cartpole-swingup.pt"),
    ("demo-missing-tokenizer", "demo", "--tokenizer {missing} --dynamics {dyn}", "--tokenizer"),
    ("demo-swapped-kinds", "demo", "--tokenizer {dyn} --dynamics {tok}", "holds a dynamics checkpoint"),
    ("demo-bad-steps", "demo", "--tokenizer {tok} --dynamics {dyn} --steps 3", "--steps 3"),
    ("demo-config-disagrees", "demo", "--tokenizer {wide} --dynamics {dyn}", "wide"),
    ("probe-missing-tokenizer", "dreamer4_torch.eval", "probe --tokenizer {missing} --data {data}", "--tokenizer"),
    ("policy-missing-run", "dreamer4_torch.eval", "policy {missing}", "no run directory"),
    ("policy-not-an-agent", "dreamer4_torch.eval", "policy {dyn}", "dyn"),
]


def run_main(module: str, argv: list[str]) -> tuple[int, str]:
    """Run a CLI's main(argv) here: (exit status, what it printed to stderr, with a SystemExit message)."""
    mod = importlib.import_module(module if module.startswith("shared.") else module + ".__main__")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = mod.main(argv)
        except SystemExit as e:            # argparse, or a SystemExit("error: ...") message
            code = e.code
    if isinstance(code, str):
        return 1, err.getvalue() + code
    return int(code or 0), err.getvalue()


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_bad_input_clearly_and_writes_nothing(paths, case):
    name, module, argv, fragment = case
    out = Path(paths["out"])
    shutil.rmtree(out, ignore_errors=True)
    status, message = run_main(module, argv.format(**paths).split())
    assert status != 0, f"{name}: exit status 0\n{message}"
    lines = [line for line in message.splitlines() if line.strip()]
    assert lines and "Traceback" not in message, message
    assert fragment in message, f"{name}: the message does not name {fragment!r}:\n{message}"
    assert not out.exists(), f"{name}: left {sorted(p.name for p in out.rglob('*'))} in {out}"


# --------------------------------------------------------------------------- APIs

def _torch_models(paths):
    from dreamer4_torch import load_model
    return load_model(paths["tok"], kind="tokenizer"), load_model(paths["dyn"], kind="dynamics")


def api_cases():
    """(id, call(paths), exception type, message fragment)."""
    def encode(video):
        return lambda p: _torch_models(p)[0].encode(video)

    def torch_sampler(context_fill=0.0, action_fill=0.0):
        def call(p):
            from dreamer4_torch.sampler import Sampler
            tok, dyn = _torch_models(p)
            c = dyn.config
            context = torch.full((1, 2, c.n_spatial, c.d_spatial), context_fill)
            s = Sampler(dyn, n_steps=2, context_length=4)
            s.reset(context, torch.zeros(1, 2, c.action_dim))
            s.step(torch.full((1, c.action_dim), action_fill))
        return call

    def jax_call(what):
        def call(p):
            jnp = pytest.importorskip("jax.numpy")
            from convert.torch_jax import convert_torch_to_jax
            from dreamer4_jax import load_model
            from dreamer4_jax.sampler import Sampler
            jdir = Path(p["out"]).parent / f"jax_{what}"
            if not jdir.exists():
                convert_torch_to_jax(p["tok"] if what.startswith("tok") else p["dyn"], jdir)
            model = load_model(jdir)
            if what == "tok-encode":
                return model.encode(jnp.full((1, 1, 3, 16, 16), jnp.nan))
            if what == "tok-decode":
                return model.decode(jnp.full((1, 1, model.config.n_latents, model.config.d_bottleneck), jnp.inf))
            c = model.config
            s = Sampler(model, n_steps=2, context_length=4)
            s.reset(jnp.zeros((1, 2, c.n_spatial, c.d_spatial)), jnp.zeros((1, 2, c.action_dim)))
            s.step(jnp.full((1, c.action_dim), jnp.nan))
        return call

    def dynamics_nan_actions(p):
        _, dyn = _torch_models(p)
        c = dyn.config
        idx = torch.zeros(1, 2, dtype=torch.long)
        dyn(torch.zeros(1, 2, c.n_spatial, c.d_spatial), signal_idx=idx, step_idx=idx,
            actions=torch.full((1, 2, c.action_dim), float("nan")))

    def load(key, kind=None):
        def call(p):
            from dreamer4_torch import load_model
            return load_model(p[key], kind=kind)
        return call

    from shared.io import CheckpointError
    return [
        ("encode-nan-frames", encode(torch.full((1, 1, 3, 16, 16), float("nan"))), ValueError, "video holds NaN"),
        ("encode-inf-frames", encode(torch.full((1, 1, 3, 16, 16), float("inf"))), ValueError, "video holds NaN"),
        ("encode-0-255-frames", encode(torch.full((1, 1, 3, 16, 16), 255.0)), ValueError, "must lie in [0, 1]"),
        ("encode-uint8-frames", encode(torch.zeros(1, 1, 3, 16, 16, dtype=torch.uint8)), TypeError, "float tensor"),
        ("encode-wrong-size", encode(torch.zeros(1, 1, 3, 32, 32)), ValueError, "(B, T, 3, 16, 16)"),
        ("decode-inf-latents", lambda p: _torch_models(p)[0].decode(torch.full((1, 1, 4, 8), float("inf"))),
         ValueError, "z holds NaN"),
        ("dynamics-nan-actions", dynamics_nan_actions, ValueError, "actions holds NaN"),
        ("sampler-nan-context", torch_sampler(context_fill=float("nan")), ValueError, "context holds NaN"),
        ("sampler-nan-action", torch_sampler(action_fill=float("nan")), ValueError, "action holds NaN"),
        ("jax-encode-nan", jax_call("tok-encode"), ValueError, "video holds NaN"),
        ("jax-decode-inf", jax_call("tok-decode"), ValueError, "z holds NaN"),
        ("jax-sampler-nan-action", jax_call("dyn-sampler"), ValueError, "action holds NaN"),
        ("load-config-disagrees", load("wide"), CheckpointError, "wide"),
        ("load-weights-cut", load("cut"), CheckpointError, "cut"),
        ("load-wrong-kind", load("tok", "dynamics"), CheckpointError, "holds a tokenizer checkpoint"),
        ("load-missing", load("missing"), CheckpointError, "does not exist"),
    ]


API_CASES = api_cases()


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_refuses_bad_input_with_a_named_error(paths, case):
    name, call, error, fragment = case
    with pytest.raises(error) as e:
        call(paths)
    assert fragment in str(e.value), f"{name}: {e.value}"
