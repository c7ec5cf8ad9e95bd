"""Real-time generation speed: frames/s of the sampler with and without the KV cache, with decoding.

    python -m benchmarks.sampler_speed                       # dmc64 and dmc128, context 8/16/24/64, K=2 and 4
    python -m benchmarks.sampler_speed --presets dmc64 --contexts 16 --steps 2
    python -m benchmarks.sampler_speed --device cuda

Every row is the steady state of interactive generation: one stream (B = 1), the window already full,
so it slides by one frame per generated frame (the cache is rebuilt in the first denoising pass, see
dreamer4_torch.sampler). A frame = K Euler steps of the dynamics model (+ decoding the new latent alone
with the tokenizer's decoder, as upstream's demo does). Random weights (speed does not depend on them).
"roll" rows use the paper's time RoPE, for which the cache rolls instead of being rebuilt.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from dreamer4_torch import Dynamics, Tokenizer
from dreamer4_torch.sampler import Sampler
from shared.config import get_preset, replace


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_frames(sampler: Sampler, context: torch.Tensor, ctx_actions: torch.Tensor, action: torch.Tensor,
                frames: int, warmup: int, device: torch.device) -> float:
    """Median seconds per generated frame in the steady (sliding-window) state."""
    sampler.reset(context, ctx_actions)
    times = []
    with torch.inference_mode():
        for i in range(warmup + frames):
            sync(device)
            t0 = time.perf_counter()
            sampler.step(action)
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_decode(tok: Tokenizer, z: torch.Tensor, reps: int, device: torch.device) -> float:
    times = []
    with torch.inference_mode():
        for i in range(reps + 1):
            sync(device)
            t0 = time.perf_counter()
            tok.decode(z)
            sync(device)
            if i:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="dmc64,dmc128", help="comma-separated presets (default: dmc64,dmc128)")
    ap.add_argument("--contexts", default="8,16,24,64", help="context lengths C (default: 8,16,24,64)")
    ap.add_argument("--steps", default="2,4", help="shortcut steps K per frame (default: 2,4)")
    ap.add_argument("--roll", default="24:4", help="extra (C:K,...) rows with time RoPE and the rolling cache "
                                                   "('' for none; default 24:4)")
    ap.add_argument("--frames", type=int, default=3, help="timed frames per measurement (median; default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed frames first (default 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    contexts = [int(c) for c in args.contexts.split(",") if c]
    steps = [int(k) for k in args.steps.split(",") if k]
    roll = [tuple(int(v) for v in r.split(":")) for r in args.roll.split(",") if r]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# sampler speed, {device} ({dev_name}{load}), fp32, torch {torch.__version__}, B=1, window full "
          f"(sliding), median of {args.frames} frames")
    print("| preset | window | C | K | uncached frames/s | cached frames/s | speed-up | decode ms "
          "| uncached frames/s with decode | cached frames/s with decode |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for name in args.presets.split(","):
        p = get_preset(name)
        torch.manual_seed(0)
        tok = Tokenizer(p.tokenizer).to(device).eval()
        rows = [("slide", c, k, False) for c in contexts for k in steps] + [("roll", c, k, True) for c, k in roll]
        decode_s = None
        for window_mode, C, K, rope in rows:
            cfg = replace(p.dynamics, transformer__time_rope=True) if rope else p.dynamics
            torch.manual_seed(0)
            dyn = Dynamics(cfg).to(device).eval()
            with torch.no_grad():
                dyn.flow_x_head.weight.normal_(0, 0.02)
            context = (torch.rand(1, C, cfg.n_spatial, cfg.d_spatial, generator=g) * 2 - 1).to(device)
            action = torch.zeros(1, cfg.action_dim, device=device)
            per_frame = {}
            for use_cache in (False, True):
                s = Sampler(dyn, n_steps=K, context_length=C, window_mode=window_mode, use_cache=use_cache)
                ctx_actions = torch.zeros(1, C, cfg.action_dim, device=device)
                per_frame[use_cache] = time_frames(s, context, ctx_actions, action, args.frames, args.warmup, device)
            if decode_s is None:
                z = tok.encode(torch.rand(1, 1, p.tokenizer.channels, p.tokenizer.image_height,
                                          p.tokenizer.image_width, device=device))
                decode_s = time_decode(tok, z, max(3, args.frames), device)
            un, ca = per_frame[False], per_frame[True]
            print(f"| {name} | {window_mode} | {C} | {K} | {1 / un:.2f} | {1 / ca:.2f} | {un / ca:.2f}x | "
                  f"{decode_s * 1e3:.1f} | {1 / (un + decode_s):.2f} | {1 / (ca + decode_s):.2f} |", flush=True)


if __name__ == "__main__":
    main()
