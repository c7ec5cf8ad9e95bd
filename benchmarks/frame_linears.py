"""What do the matrix products of one KV-cached denoising step cost? Plain nn.Linear vs prepacked oneDNN.

    python -m benchmarks.frame_linears                       # dmc64 and dmc128
    python -m benchmarks.frame_linears --presets dmc128 --threads 1,2

With the KV cache, every denoising step after the first runs only the new frame's tokens (16-22 rows),
so each weight matrix of the dynamics model multiplies a handful of rows. This benchmark applies every
nn.Linear of the dynamics model, in order, to an input with as many rows as one frame has tokens, and
prints the time (median of --repeats) of torch's plain F.linear (MKL sgemm on the weight as stored)
and of oneDNN with the weights reordered once (dreamer4_torch.prepack, what the samplers use on the
CPU), next to the weights' size. "GB/s" is weight bytes over time, and the last column reads a tensor
of the same size (a sum) for comparison: when the products run far below that, they are limited by the
kernel's arithmetic on so few rows, not by reading the weights.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from dreamer4_torch import Dynamics
from dreamer4_torch.prepack import available, pack_weight, packed_linear
from shared.config import ConfigError
from shared.recipes import get_preset


def _median_seconds(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def time_linears(preset: str, threads: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    model = Dynamics(get_preset(preset).dynamics).eval()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = [m.weight.detach() for m in layers]
    biases = [None if m.bias is None else m.bias.detach() for m in layers]
    rows = model.config.n_tokens          # one frame's tokens
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
    mb = sum(w.numel() * w.element_size() for w in weights) / 1e6
    with torch.inference_mode():
        plain = _median_seconds(lambda: [F.linear(inputs[w.shape[1]], w, b) for w, b in zip(weights, biases)],
                                repeats)
        packed_s = None
        if available():
            packed = [pack_weight(w) for w in weights]
            packed_s = _median_seconds(lambda: [packed_linear(inputs[w.shape[1]], p, b)
                                                for w, p, b in zip(weights, packed, biases)], repeats)
        flat = torch.randn(int(mb * 1e6 / 4))
        read = _median_seconds(lambda: flat.sum(), repeats)
    return {"preset": preset, "threads": threads, "rows": rows, "matrices": len(weights), "mb": mb,
            "plain_ms": plain * 1e3, "packed_ms": None if packed_s is None else packed_s * 1e3,
            "plain_gbps": mb / 1e3 / plain, "packed_gbps": None if packed_s is None else mb / 1e3 / packed_s,
            "read_gbps": mb / 1e3 / read}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.frame_linears", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="dmc64,dmc128", help="comma-separated presets (default: dmc64,dmc128)")
    ap.add_argument("--threads", default=None,
                    help="comma-separated torch CPU thread counts "
                         f"(default: torch's choice, {torch.get_num_threads()})")
    ap.add_argument("--repeats", type=int, default=30, help="timed repetitions, median reported (default 30)")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
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
    note = "" if available() else " (this torch build has no oneDNN linear ops: no prepacked column)"
    print(f"# matrix products of one single-frame pass, cpu ({platform.machine()}), fp32, "
          f"torch {torch.__version__}, median of {args.repeats}{note}")
    print("| preset | threads | rows (frame tokens) | matrices | weights MB | plain ms | plain GB/s "
          "| prepacked ms | prepacked GB/s | reading the same bytes, GB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in presets:
        for t in threads:
            r = time_linears(p, t, args.repeats)
            packed = ("n/a", "n/a") if r["packed_ms"] is None else \
                (f"{r['packed_ms']:.2f}", f"{r['packed_gbps']:.2f}")
            print(f"| {r['preset']} | {r['threads']} | {r['rows']} | {r['matrices']} | {r['mb']:.1f} | "
                  f"{r['plain_ms']:.2f} | {r['plain_gbps']:.2f} | {packed[0]} | {packed[1]} | "
                  f"{r['read_gbps']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
