"""How fast can a single-frame (cached) denoising pass possibly be? Time only its matrix products.

    python -m benchmarks.weight_bandwidth                    # dmc64 and dmc128
    python -m benchmarks.weight_bandwidth --presets dmc128 --threads 1,2

With the KV cache, every denoising step after the first runs only the new frame's tokens (a few
dozen), so each of the dynamics model's weight matrices is read once to multiply a handful of rows:
the pass is bound by memory bandwidth, not arithmetic. This benchmark applies every nn.Linear of the
dynamics model, in order, to an input with as many rows as one frame has tokens and prints the time
(median of --repeats) next to the bytes of weights read. It is the floor under the cached step time
in benchmarks.sampler_speed (which adds attention over the cache, norms and the other small ops).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from dreamer4_torch import Dynamics
from shared.config import ConfigError, get_preset


def time_linears(preset: str, threads: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    model = Dynamics(get_preset(preset).dynamics).eval()
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    rows = model.config.n_tokens          # one frame's tokens
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}

    def once() -> None:
        for w in weights:
            F.linear(inputs[w.shape[1]], w)

    with torch.inference_mode():
        for _ in range(3):
            once()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            once()
            times.append(time.perf_counter() - t)
    times.sort()
    seconds = times[len(times) // 2]
    mb = sum(w.numel() * w.element_size() for w in weights) / 1e6
    return {"preset": preset, "threads": threads, "rows": rows, "matrices": len(weights), "mb": mb,
            "ms": seconds * 1e3, "gbps": mb / 1e3 / seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.weight_bandwidth", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="dmc64,dmc128", help="comma-separated presets (default: dmc64,dmc128)")
    ap.add_argument("--threads", default=None,
                    help=f"comma-separated torch CPU thread counts (default: torch's choice, {torch.get_num_threads()})")
    ap.add_argument("--repeats", type=int, default=30, help="timed repetitions, median reported (default 30)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    presets = [p for p in args.presets.split(",") if p]
    try:
        threads = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    except ValueError:
        ap.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if any(t < 1 for t in threads):
        ap.error(f"--threads must be >= 1, got {args.threads}")
    for p in presets:
        try:
            get_preset(p)      # an unknown preset fails before any timing
        except ConfigError as e:
            ap.error(str(e))
    print(f"# matrix products of one single-frame pass, cpu ({platform.machine()}), fp32, "
          f"torch {torch.__version__}, median of {args.repeats}")
    print("| preset | threads | rows (frame tokens) | matrices | weights MB | ms | GB/s |")
    print("|---|---|---|---|---|---|---|")
    for p in presets:
        for t in threads:
            r = time_linears(p, t, args.repeats)
            print(f"| {r['preset']} | {r['threads']} | {r['rows']} | {r['matrices']} | {r['mb']:.1f} | "
                  f"{r['ms']:.2f} | {r['gbps']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
