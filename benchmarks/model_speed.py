"""Forward+backward time of the tokenizer and dynamics models, printed as a table.

    python -m benchmarks.model_speed                 # the issue's cases: dmc128 tokenizer B=1 T=8,
                                                     # dmc128 dynamics B=2 T=32 (+ dmc64)
    python -m benchmarks.model_speed --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from dreamer4_torch import Dynamics, Tokenizer, shortcut_loss, tokenizer_loss
from shared.recipes import get_preset
from shared.shortcut import draw_shortcut_indices

CASES = [("tokenizer", "dmc128", 1, 8), ("dynamics", "dmc128", 2, 32),
         ("tokenizer", "dmc64", 8, 8), ("dynamics", "dmc64", 8, 32)]


def make_step(kind, preset, B, T, device, dtype):
    p = get_preset(preset)
    if kind == "tokenizer":
        model = Tokenizer(p.tokenizer).to(device).train()
        c = p.tokenizer
        video = torch.rand(B, T, c.channels, c.image_height, c.image_width, device=device)

        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = model(video)
                loss, _ = tokenizer_loss(out, image_shape=(c.channels, c.image_height, c.image_width),
                                         patch_size=c.patch_size)
            loss.backward()
        return model, step, B * T
    model = Dynamics(p.dynamics).to(device).train()
    c = p.dynamics
    z1 = torch.rand(B, T, c.n_spatial, c.d_spatial, device=device) * 2 - 1
    draw = draw_shortcut_indices(np.random.default_rng(0), B, T, c.k_max, n_bootstrap=0)
    sig, stp = torch.from_numpy(draw.signal_idx).to(device), torch.from_numpy(draw.step_idx).to(device)
    actions = torch.rand(B, T, c.action_dim, device=device) * 2 - 1

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = shortcut_loss(model, z1, signal_idx=sig, step_idx=stp, noise=torch.randn_like(z1),
                                    n_bootstrap=0, k_max=c.k_max, actions=actions)
        loss.backward()
    return model, step, B * T


def time_step(step, device, warmup, iters):
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def build_parser() -> argparse.ArgumentParser:
    cases = ", ".join(f"{i}: {kind} {preset} B={B} T={T}" for i, (kind, preset, B, T) in enumerate(CASES))
    ap = argparse.ArgumentParser(prog="python -m benchmarks.model_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                    help="fp32, or bf16 autocast around the forward pass and loss (default fp32)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before timing each case (default 1)")
    ap.add_argument("--iters", type=int, default=3, help="timed steps per case, median reported (default 3)")
    ap.add_argument("--cases", default="all", help=f"comma-separated case indices, or 'all' (default): {cases}")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.warmup < 0 or args.iters < 1:
        ap.error("--warmup must be >= 0 and --iters >= 1")
    try:
        cases = CASES if args.cases == "all" else [CASES[int(i)] for i in args.cases.split(",")]
    except (ValueError, IndexError):
        ap.error(f"--cases takes 'all' or comma-separated indices 0..{len(CASES) - 1}, got {args.cases!r}")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    print(f"# forward+backward, {device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), {args.dtype}, torch {torch.__version__}, median of {args.iters}")
    print("| model | preset | params | B | T | s / step | frames / s |")
    print("|---|---|---|---|---|---|---|")
    for kind, preset, B, T in cases:
        model, step, frames = make_step(kind, preset, B, T, device, dtype)
        n = sum(p.numel() for p in model.parameters())
        sec = time_step(step, device, args.warmup, args.iters)
        print(f"| {kind} | {preset} | {n / 1e6:.1f}M | {B} | {T} | {sec:.3f} | {frames / sec:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
