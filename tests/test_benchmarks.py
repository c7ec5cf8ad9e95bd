"""The benchmark scripts run end to end at the tiny preset and print well-formed tables.

They measure speed, which tests never judge (benchmarks/RESULTS.md holds the numbers); this only
keeps the scripts from breaking as the code under them changes.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from benchmarks import frame_linears, sampler_speed
from dreamer4_torch.prepack import available as prepack_available

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# The benchmarks and nothing else (RESULTS.md holds their tables): a new file here must be one of them.
NAMES = ["collect_all_tasks", "data_speed", "demo_load", "frame_linears", "model_speed", "sampler_speed",
         "train_speed"]


def table_rows(text: str) -> list[list[str]]:
    """Data rows of the markdown tables in text (header and separator rows dropped)."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r] for r in rows if not set(r[0].strip()) <= {"-"} and r[0].strip() not in
            ("preset", "backend", "sessions")]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The scripts set torch's thread count (--threads); give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_frame_linears_table(capsys):
    assert frame_linears.main(["--presets", "tiny", "--threads", "1", "--repeats", "2"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert len(rows) == 1
    preset, threads, n_rows, matrices, mb, ms, gbps, packed_ms, packed_gbps, read_gbps = rows[0]
    assert (preset, threads) == ("tiny", "1")
    assert int(n_rows) > 0 and int(matrices) > 0
    assert float(mb) > 0 and float(ms) > 0 and float(gbps) > 0 and float(read_gbps) > 0
    if prepack_available():
        assert float(packed_ms) > 0 and float(packed_gbps) > 0
    else:
        assert (packed_ms, packed_gbps) == ("n/a", "n/a")


def test_frame_linears_rejects_an_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        frame_linears.main(["--presets", "dmc256"])
    assert "unknown preset 'dmc256'" in capsys.readouterr().err


def test_sampler_speed_table(capsys):
    assert sampler_speed.main(["--presets", "tiny", "--contexts", "4", "--steps", "2", "--roll", "4:2",
                               "--frames", "1", "--warmup", "1", "--threads", "1"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [("torch", "tiny", "slide", "4", "2"),
                                                              ("torch", "tiny", "roll", "4", "2")]
    for r in rows:
        assert all(float(v.rstrip("x")) > 0 for v in r[5:])


def test_collect_all_tasks_table(capsys):
    from benchmarks import collect_all_tasks
    assert collect_all_tasks.main(["--tasks", "cartpole-swingup", "--size", "16"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["task", "cartpole-swingup"], out         # header row, one row per task
    build_s, rate, cpu_rate, mean, low, high = (float(v) for v in rows[1][1:7])
    assert build_s > 0 and rate > 0 and cpu_rate > 0 and low <= mean <= high
    assert "1 episodes, 501 frames, check: OK" in out


def test_demo_load_with_more_sessions_than_the_limit(tmp_path, capsys):
    """Six clients against a limit of four: the oldest sessions are evicted while they step, and no call fails."""
    pytest.importorskip("gradio_client")
    from benchmarks import demo_load
    out = tmp_path / "load.json"
    assert demo_load.main(["--sessions", "6", "--max-sessions", "4", "--seconds", "4", "--random-weights", "tiny",
                           "--json", str(out)]) == 0
    import json
    result = json.loads(out.read_text())
    assert result["errors"] == 0 and result["server_alive"] and result["fps_min"] > 0, result
    assert result["rss_peak_mib"] >= result["rss_start_mib"] > 0
    rows = table_rows(capsys.readouterr().out)
    assert rows[-1][0] == "6" and rows[-1][3] == "0", rows


def test_benchmarks_holds_only_benchmarks():
    """No shell sweep, no sweep config, no sub-folder: experiments/ holds those, dreamer4_torch.eval the
    evaluations of trained runs."""
    files = sorted(p.name for p in BENCHMARKS.iterdir() if p.name != "__pycache__")
    assert files == sorted(["__init__.py", "RESULTS.md", *(f"{n}.py" for n in NAMES)])
    assert not list(BENCHMARKS.rglob("*.sh")) and not list(BENCHMARKS.rglob("*.json"))


@pytest.mark.parametrize("name", NAMES)
def test_every_benchmark_explains_its_options_and_prints_a_table(name, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    parser = module.build_parser()
    unexplained = [a.dest for a in parser._actions if not (a.help or "").strip()]
    assert not unexplained, unexplained
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m benchmarks.{name} ")
    # its output is a markdown table: a header row and the separator row under it
    source = (BENCHMARKS / f"{name}.py").read_text()
    assert 'print("|---|' in source, f"benchmarks/{name}.py prints no markdown table"
