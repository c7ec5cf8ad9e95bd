"""Running the pipeline's stages as subprocesses: signals passed on once, failures reported with
what to do, finished training runs skipped and interrupted ones resumed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE_SECONDS = 120.0     # how long a stage may take to save and exit after SIGTERM/SIGINT


def say(message: str) -> None:
    print(f"\n=== {message}", flush=True)


def wait_for_stage(child: subprocess.Popen) -> int:
    """Wait for a stage; SIGTERM/SIGINT to the pipeline is passed on to it once (trainers save a
    checkpoint and exit, the demo shuts down; a second SIGINT would make a trainer abandon its final
    checkpoint), the stage gets STOP_GRACE_SECONDS to exit and is killed after that, and then the
    pipeline exits with 128 + the signal number, so that nothing is left running.

    The handler only records the signal and forwards it: waiting for the child inside it would
    contend with the wait below for the child's exit status and never see it."""
    stop: dict = {}

    def handler(signum, frame):
        if not stop:
            stop.update(signum=signum, deadline=time.monotonic() + STOP_GRACE_SECONDS)
            if child.returncode is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                returncode = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop and time.monotonic() > stop["deadline"]:
                    child.kill()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if stop:
        raise SystemExit(128 + stop["signum"])
    return returncode


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    # Its own session: a Ctrl-C in the terminal reaches only this process, which passes it on once.
    returncode = wait_for_stage(subprocess.Popen(cmd, start_new_session=True))
    if returncode != 0:
        raise SystemExit(f"quickstart: stage failed (exit code {returncode}); fix the problem above and "
                         "re-run the same command: finished stages are skipped, interrupted ones resume")


def train_stage(kind: str, out: Path, args: list[str]) -> dict:
    """Train `kind` into `out` with `python -m dreamer4_torch.train` unless `out` holds a finished
    run; resume an interrupted one. Returns the run's done.json."""
    done = out / "done.json"
    if done.exists():
        info = json.loads(done.read_text())
        print(f"{kind}: already trained ({info['step']} steps) in {out}; skipping", flush=True)
        if info.get("reason") == "max_minutes":
            print(f"{kind}: that run was stopped by a time cap before its {info['steps']} steps; delete {out} "
                  "to train it for its steps", flush=True)
        return info
    resume = ["--resume"] if (out / "checkpoints" / "latest").exists() else []
    if resume:
        print(f"{kind}: continuing the interrupted run in {out}", flush=True)
    run([sys.executable, "-m", "dreamer4_torch.train", kind, "--out", str(out), *args, *resume])
    return json.loads(done.read_text())
