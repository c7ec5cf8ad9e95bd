"""Training curves from RUN_DIR/metrics.jsonl as a PNG.

    python -m dreamer4_torch.train.plot RUN_DIR [--out curves.png]

Panels: training loss (log scale), learning rate, and the evaluation metrics (tokenizer: held-out
PSNR; dynamics: rollout PSNR per horizon against the repeat-last-frame floor); for behaviour-cloning
runs a fourth: the BC and reward losses, in training and on held-out windows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_metrics(run_dir: Path) -> tuple[dict, dict]:
    train: dict[str, list] = {}
    evals: dict[str, list] = {}
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a training run directory?")
    seen_train, seen_eval = {}, {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        for group, store, seen in (("train", train, seen_train), ("eval", evals, seen_eval)):
            if group in rec:
                seen[rec["step"]] = rec[group]    # a resumed run logs some steps again: keep the last
    for seen, store in ((seen_train, train), (seen_eval, evals)):
        for step in sorted(seen):
            for k, v in seen[step].items():
                store.setdefault(k, []).append((step, v))
    return train, evals


def plot_run(run_dir: Path, out: Path | None = None, title: str | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "curves.png"
    train, evals = read_metrics(run_dir)
    agent = "bc" in train
    fig, axes = plt.subplots(1, 4 if agent else 3, figsize=(22 if agent else 17, 4))
    ax = axes[0]
    # a BC run's total loss holds a negative log-likelihood (it can be negative): its video loss here
    for key in ("video_loss" if agent else "loss", "flow_mse", "boot_mse"):
        if key in train:
            steps, values = zip(*train[key])
            ax.plot(steps, values, label=key, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("training loss")
    ax.legend()
    ax = axes[1]
    if "lr" in train:
        steps, values = zip(*train["lr"])
        ax.plot(steps, values, color="tab:gray")
    ax.set_xlabel("step")
    ax.set_title("learning rate")
    ax = axes[2]
    horizons = sorted({int(k[len("psnr_h"):]) for k in evals if k.startswith("psnr_h")})
    if horizons:
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, h in enumerate(horizons):
            steps, values = zip(*evals[f"psnr_h{h}"])
            ax.plot(steps, values, color=colors[i % len(colors)], marker="o", ms=3, label=f"model, horizon {h}")
            steps, values = zip(*evals[f"floor_h{h}"])
            ax.plot(steps, values, color=colors[i % len(colors)], ls="--", lw=1, marker="x", ms=5,
                    label=f"repeat last frame, h {h}")      # markers: visible with a single evaluation too
        ax.set_title("held-out rollout PSNR (dB)")
        # beside the axes: inside, with eight lines, it covered one of them
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    elif "psnr" in evals:
        steps, values = zip(*evals["psnr"])
        ax.plot(steps, values, marker="o", ms=3)
        ax.set_title("held-out reconstruction PSNR (dB)")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if agent:
        ax = axes[3]
        for key, color in (("bc", "tab:blue"), ("reward", "tab:orange")):
            if key in train:
                steps, values = zip(*train[key])
                ax.plot(steps, values, color=color, lw=1, alpha=0.6,
                        label=f"{key} (training{', better episodes' if key == 'bc' else ''})")
            if f"heldout_{key}" in evals:
                steps, values = zip(*evals[f"heldout_{key}"])
                ax.plot(steps, values, color=color, marker="o", ms=4, label=f"{key} (held-out episodes, all)")
        ax.set_title("agent losses (BC: -log pi; reward: cross-entropy)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or run_dir.name)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dreamer4_torch.train.plot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    args = ap.parse_args(argv)
    print(plot_run(Path(args.run_dir), Path(args.out) if args.out else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
