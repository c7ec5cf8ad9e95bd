"""Speed of the data layer, printed as a table: collector frames/s and loader windows/s.

    python -m benchmarks.data_speed                     # walker-walk at 64x64, 2 workers, T=16
    python -m benchmarks.data_speed --size 128 --episodes 8 --workers 4

Collector rows: recording walker-walk episodes with the default settings (shadows, reflections
and multisampling off, 2x supersampling), timed from the call to the last committed episode,
so worker start-up is included. Loader rows: windows of T + 1 frames read from the dataset just
collected, by the numpy WindowSampler in this process, by a torch DataLoader over
WindowDataset with worker processes, and by the JAX WindowBatches iterator.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path


def collector_rows(out: Path, args) -> list[tuple[str, str, float]]:
    from shared.data.collect import CollectConfig, collect

    rows = []
    for workers in sorted({1, args.workers}):
        path = out / f"collect-w{workers}"
        cpu_before = _cpu_seconds()
        result = collect(args.task, args.episodes, path, CollectConfig(size=args.size),
                         workers=workers, progress=False, log=lambda *_: None)
        cpu = _cpu_seconds() - cpu_before
        rows.append((f"collect {args.task} {args.size}x{args.size}", f"{workers} worker(s)",
                     result["new_frames"] / result["seconds"]))
        rows.append((f"collect {args.task} {args.size}x{args.size}", "per CPU-second",
                     result["new_frames"] / cpu))
    return rows


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (collector workers), all threads."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def loader_rows(path: Path, args) -> list[tuple[str, str, float]]:
    window = args.T + 1
    rows = []

    from shared.data.windows import WindowSampler

    sampler = WindowSampler(path, window, seed=0)
    sampler.sample(args.batch)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        count += len(sampler.sample(args.batch)["frames"])
    rows.append((f"numpy WindowSampler T={args.T}", "this process", count / (time.perf_counter() - start)))

    import torch
    from torch.utils.data import DataLoader

    from dreamer4_torch.data import DistributedWindowSampler, WindowDataset

    torch.set_num_threads(1)
    dataset = WindowDataset(path, window)
    sampler = DistributedWindowSampler(dataset, num_replicas=1, rank=0, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch, sampler=sampler,
                        num_workers=args.loader_workers, persistent_workers=True, drop_last=True)
    epoch, count, start = 0, 0, None
    while start is None or time.perf_counter() - start < args.seconds:
        sampler.set_epoch(epoch)
        for batch in loader:
            if start is None:  # the first batch pays for starting the workers
                start = time.perf_counter()
                continue
            count += len(batch["frames"])
            if time.perf_counter() - start >= args.seconds:
                break
        epoch += 1
    rows.append((f"torch DataLoader T={args.T}", f"{args.loader_workers} workers",
                 count / (time.perf_counter() - start)))

    from dreamer4_jax.data import WindowBatches

    batches = WindowBatches(path, window, global_batch_size=args.batch, seed=0)
    next(batches)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        batch = next(batches)
        batch["frames"].block_until_ready()
        count += batch["frames"].shape[0]
    batches.close()
    rows.append((f"jax WindowBatches T={args.T}", "1 prefetch thread", count / (time.perf_counter() - start)))
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="walker-walk", help="task to collect (default walker-walk)")
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels (default 64)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per collector run (default 4)")
    parser.add_argument("--workers", type=int, default=2,
                        help="collector processes of the second collector row (the first uses 1; default 2)")
    parser.add_argument("--T", type=int, default=16, help="transitions per window, T + 1 frames (default 16)")
    parser.add_argument("--batch", type=int, default=32, help="windows per batch (default 32)")
    parser.add_argument("--loader-workers", type=int, default=2, help="torch DataLoader worker processes (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per loader measurement (default 5 s)")
    parser.add_argument("--out", default=None, help="keep the collected datasets here (default: a "
                        "temporary directory)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        rows = collector_rows(out, args)
        rows += loader_rows(out / f"collect-w{args.workers}", args)
    print(f"\n# data layer speed on {platform.node()} ({os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end), MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
    print("| what | how | per second | unit |")
    print("|---|---|---|---|")
    for what, how, rate in rows:
        unit = "frames" if what.startswith("collect") else "windows"
        print(f"| {what} | {how} | {rate:.0f} | {unit} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
