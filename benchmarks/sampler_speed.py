"""Real-time generation speed: frames/s of the sampler with and without the KV cache, with decoding.

    python -m benchmarks.sampler_speed                       # dmc64 and dmc128, context 8/16/24/64, K=2 and 4
    python -m benchmarks.sampler_speed --presets dmc64 --contexts 16 --steps 2
    python -m benchmarks.sampler_speed --device cuda
    python -m benchmarks.sampler_speed --backend torch,jax      # JAX rows too (dreamer4_jax.sampler)

Every row is the steady state of interactive generation: one stream (B = 1), the window already full,
so it slides by one frame per generated frame (the cache is rebuilt in the first denoising pass, see
dreamer4_torch.sampler). A frame = K Euler steps of the dynamics model (+ decoding the new latent alone
with the tokenizer's decoder, as upstream's demo does). Random weights (speed does not depend on them).
"roll" rows use the paper's time RoPE, for which the cache rolls instead of being rebuilt.
JAX rows run the same models converted in memory (convert.torch_jax) through dreamer4_jax.sampler with
jit="auto" (the demo's setting: compiled model calls in the steady state, which is what is timed, after
at least two warm-up frames that include the compilations; the uncached "roll" reference, whose input
grows every frame, runs eagerly and its JAX rows include compiling ops for each new shape) on JAX's
default device, and decode with a jit-compiled tokenizer decoder; --device applies to torch.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from dreamer4_torch import Dynamics, Tokenizer
from dreamer4_torch.prepack import PrepackedLinears
from dreamer4_torch.prepack import available as prepack_available
from dreamer4_torch.sampler import Sampler
from shared.config import replace
from shared.recipes import get_preset


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_frames(sampler, context, ctx_actions, action, frames: int, warmup: int, device: torch.device,
                backend: str = "torch") -> float:
    """Median seconds per generated frame in the steady (sliding-window) state."""
    sampler.reset(context, ctx_actions)
    times = []
    with torch.inference_mode():
        for i in range(warmup + frames):
            sync(device)
            t0 = time.perf_counter()
            z = sampler.step(action)
            if backend == "jax":
                z.block_until_ready()
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_decode(decode, z, reps: int, device: torch.device, backend: str = "torch") -> float:
    times = []
    with torch.inference_mode():
        for i in range(reps + 1):
            sync(device)
            t0 = time.perf_counter()
            out = decode(z)
            if backend == "jax":
                out.block_until_ready()
            sync(device)
            if i:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sampler_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="dmc64,dmc128", help="comma-separated presets (default: dmc64,dmc128)")
    ap.add_argument("--contexts", default="8,16,24,64", help="context lengths C (default: 8,16,24,64)")
    ap.add_argument("--steps", default="2,4", help="shortcut steps K per frame (default: 2,4)")
    ap.add_argument("--roll", default="24:4", help="extra (C:K,...) rows with time RoPE and the rolling cache "
                                                   "('' for none; default 24:4)")
    ap.add_argument("--frames", type=int, default=3, help="timed frames per measurement (median; default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed frames first (default 1)")
    ap.add_argument("--backend", default="torch", help="comma-separated backends: torch, jax (default: torch)")
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--prepack", action=argparse.BooleanOptionalAction, default=True,
                    help="torch on the CPU: Linears through oneDNN with prepacked weights, in both samplers and "
                         "the decoder (dreamer4_torch.prepack; the samplers' default). --no-prepack: plain nn.Linear")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    backends = [b for b in args.backend.split(",") if b]
    unknown = set(backends) - {"torch", "jax"}
    if unknown or not backends:
        ap.error(f"--backend: choose from torch, jax (got {args.backend!r})")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    contexts = [int(c) for c in args.contexts.split(",") if c]
    steps = [int(k) for k in args.steps.split(",") if k]
    roll = [tuple(int(v) for v in r.split(":")) for r in args.roll.split(",") if r]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    versions = f"torch {torch.__version__}"
    if "jax" in backends:
        import jax
        from flax import nnx

        from convert.torch_jax import torch_to_jax
        from dreamer4_jax.sampler import Sampler as JaxSampler
        jax_decode = nnx.jit(lambda m, z: m.decode(z))
        versions += f", jax {jax.__version__} on {jax.default_backend()}"
    linears = "" if device.type != "cpu" else \
        (", prepacked oneDNN linears" if args.prepack and prepack_available() else ", plain linears")
    print(f"# sampler speed, {device} ({dev_name}{load}), fp32{linears}, {versions}, B=1, window full "
          f"(sliding), median of {args.frames} frames")
    print("| backend | preset | window | C | K | uncached frames/s | cached frames/s | speed-up | decode ms "
          "| uncached frames/s with decode | cached frames/s with decode |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for name in args.presets.split(","):
        p = get_preset(name)
        torch.manual_seed(0)
        tok = Tokenizer(p.tokenizer).to(device).eval()
        jtok = torch_to_jax(tok.cpu()) if "jax" in backends else None
        tok = tok.to(device)
        rows = [("slide", c, k, False) for c in contexts for k in steps] + [("roll", c, k, True) for c, k in roll]
        decode_s = {}
        for window_mode, C, K, rope in rows:
            cfg = replace(p.dynamics, transformer__time_rope=True) if rope else p.dynamics
            torch.manual_seed(0)
            dyn = Dynamics(cfg).eval()
            with torch.no_grad():
                dyn.flow_x_head.weight.normal_(0, 0.02)
            jdyn = torch_to_jax(dyn) if "jax" in backends else None
            dyn = dyn.to(device)
            context = torch.rand(1, C, cfg.n_spatial, cfg.d_spatial, generator=g) * 2 - 1
            for backend in backends:
                per_frame = {}
                for use_cache in (False, True):
                    if backend == "torch":
                        s = Sampler(dyn, n_steps=K, context_length=C, window_mode=window_mode, use_cache=use_cache,
                                    prepack=args.prepack)
                        ctx, ctx_actions = context.to(device), torch.zeros(1, C, cfg.action_dim, device=device)
                        action = torch.zeros(1, cfg.action_dim, device=device)
                    else:
                        s = JaxSampler(jdyn, n_steps=K, context_length=C, window_mode=window_mode,
                                       use_cache=use_cache, key=0, jit="auto")
                        ctx, ctx_actions = context.numpy(), np.zeros((1, C, cfg.action_dim), np.float32)
                        action = np.zeros((1, cfg.action_dim), np.float32)
                    # JAX: the rolling cache's steady-state signature first appears in the second frame
                    warmup = args.warmup if backend == "torch" else max(args.warmup, 2)
                    per_frame[use_cache] = time_frames(s, ctx, ctx_actions, action, args.frames, warmup,
                                                       device, backend)
                if backend not in decode_s:
                    video = torch.rand(1, 1, p.tokenizer.channels, p.tokenizer.image_height, p.tokenizer.image_width)
                    with torch.inference_mode():
                        z = tok.encode(video.to(device))
                    if backend == "torch":
                        with PrepackedLinears(tok, enabled=args.prepack):
                            decode_s[backend] = time_decode(tok.decode, z, max(3, args.frames), device)
                    else:
                        zj = z.cpu().numpy()
                        decode_s[backend] = time_decode(lambda v: jax_decode(jtok, v), zj, max(3, args.frames),
                                                        device, backend)
                un, ca, dec = per_frame[False], per_frame[True], decode_s[backend]
                print(f"| {backend} | {name} | {window_mode} | {C} | {K} | {1 / un:.2f} | {1 / ca:.2f} | "
                      f"{un / ca:.2f}x | {dec * 1e3:.1f} | {1 / (un + dec):.2f} | {1 / (ca + dec):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
