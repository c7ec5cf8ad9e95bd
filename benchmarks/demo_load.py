"""Load test of the demo server: many API clients stepping their own sessions at full speed.

    python -m benchmarks.demo_load                                  # 32 sessions for 60 s, random dmc64 weights
    python -m benchmarks.demo_load --run-dir runs/quickstart        # the quickstart's trained model
    python -m benchmarks.demo_load --sessions 40 --max-sessions 32  # beyond the limit: the oldest are evicted

It serves `python -m demo` on the loopback (never another address), opens one gradio_client per session,
and from one thread per session resets once and then calls /step with random actions until the time is
up. It prints frames/s per session (mean, min, max), the server's total, the errors (any failed call;
an evicted session's next call simply gets a new session, which is not an error), and the server's
resident memory at the start and at its peak (sampled every 0.2 s from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB; NaN where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.demo_load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=32, help="concurrent API clients, one session each (default 32)")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long every client steps (default 60)")
    ap.add_argument("--max-sessions", type=int, default=32, help="the server's session limit (default 32)")
    ap.add_argument("--random-weights", default="dmc64", metavar="PRESET",
                    help="serve untrained models of this preset (default dmc64; speed does not depend on weights)")
    ap.add_argument("--run-dir", default=None, help="serve this trained run instead (tokenizer/ and dynamics/)")
    ap.add_argument("--steps", type=int, default=2, help="shortcut steps K per frame (default 2, the demo's)")
    ap.add_argument("--json", default=None, help="also write the result here")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("sessions", "max_sessions", "steps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1")
    if not args.seconds > 0:
        raise SystemExit("error: --seconds must be > 0")
    try:
        import gradio_client
    except ImportError:
        raise SystemExit("error: the load test needs the demo extra (pip install 'dreamer4[demo]')") from None
    from demo.process import DemoServer

    model = ["--run-dir", args.run_dir] if args.run_dir else ["--random-weights", args.random_weights]
    server = DemoServer(*model, "--steps", args.steps, "--max-sessions", args.max_sessions)
    try:
        pid = server.proc.pid
        rss_start, peak = rss_mib(pid), [rss_mib(pid)]
        clients = [gradio_client.Client(server.url, verbose=False) for _ in range(args.sessions)]
        dims = len(clients[0].view_api(print_info=False, return_format="dict")["named_endpoints"]["/step"]
                   ["parameters"])
        frames, errors, messages = [0] * args.sessions, [0] * args.sessions, []
        start = threading.Barrier(args.sessions + 1)
        stop = threading.Event()

        def client_loop(i: int) -> None:
            rng = np.random.default_rng(i)
            c = clients[i]
            try:
                c.predict(i, api_name="/reset")
            except Exception as e:  # noqa: BLE001 - every failure counts, whatever gradio_client raises
                errors[i] += 1
                messages.append(f"session {i} reset: {e}")
            start.wait()
            while not stop.is_set():
                try:
                    c.predict(*rng.uniform(-1, 1, dims).round(3).tolist(), api_name="/step")
                    frames[i] += 1
                except Exception as e:  # noqa: BLE001
                    errors[i] += 1
                    if len(messages) < 10:
                        messages.append(f"session {i} step: {e}")

        threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(args.sessions)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            time.sleep(0.2)
            peak.append(rss_mib(pid))
        stop.set()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.perf_counter() - t0
        alive = server.proc.poll() is None
    finally:
        server.stop()

    fps = np.array(frames) / elapsed
    result = {"sessions": args.sessions, "max_sessions": args.max_sessions, "seconds": round(elapsed, 1),
              "model": args.run_dir or f"random {args.random_weights}", "K": args.steps,
              "fps_mean": float(fps.mean()), "fps_min": float(fps.min()), "fps_max": float(fps.max()),
              "fps_total": float(fps.sum()), "errors": int(sum(errors)), "server_alive": alive,
              "rss_start_mib": rss_start, "rss_peak_mib": float(np.nanmax(peak)),
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    print(f"demo load: {args.sessions} sessions stepping for {elapsed:.1f} s ({result['model']}, K = {args.steps}, "
          f"limit {args.max_sessions}, {os.cpu_count()} cores)")
    print("| sessions | frames/s per session (mean, min-max) | total frames/s | errors | memory start -> peak |")
    print("|---|---|---|---|---|")
    print(f"| {args.sessions} | {fps.mean():.2f} ({fps.min():.2f}-{fps.max():.2f}) | {fps.sum():.1f} | "
          f"{result['errors']} | {rss_start:.0f} -> {result['rss_peak_mib']:.0f} MiB |")
    for m in messages[:10]:
        print(f"  {m}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["errors"] == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
