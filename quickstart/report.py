"""RUN_DIR/report.md: the tokenizer's and the dynamics model's held-out PSNR tables."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def duration(done: dict) -> str:
    """'N steps in M min', saying when the last session resumed an interrupted run (its minutes only)
    and when a time cap stopped the run before the recipe's steps."""
    minutes = done.get("minutes", 0)
    text = f"{done['step']} steps in {minutes:.1f} min"
    if done.get("resumed_at"):
        text = f"{done['step']} steps (resumed at step {done['resumed_at']}; {minutes:.1f} min since)"
    if done.get("reason") == "max_minutes":
        text += f", stopped by the time cap before its {done['steps']} steps"
    return text


def report(run_dir: Path, tok: dict, dyn: dict, *, recipe: str, tasks: Sequence[str], data_dir: Path) -> Path:
    """Write RUN_DIR/report.md from the two runs' done.json records; returns its path."""
    lines = ["# Quickstart report", "",
             f"Recipe `{recipe}`, data `{data_dir}` ({','.join(tasks)}), "
             f"tokenizer {duration(tok)}, dynamics {duration(dyn)}.", "",
             "## Tokenizer (held-out episodes)", "",
             "| full-frame PSNR (pooled MSE) | mean per-frame PSNR |", "|---|---|",
             f"| {tok['eval']['psnr']:.2f} dB | {tok['eval']['psnr_frame_mean']:.2f} dB |", "",
             "## Dynamics: open-loop rollouts from held-out contexts (K = 4)", "",
             "| horizon | model PSNR | repeat-last-frame PSNR | gain | tokenizer reconstruction PSNR "
             "| repeat-last-latent PSNR |",
             "|---|---|---|---|---|---|"]
    e = dyn["eval"]
    for h in (1, 4, 8, 16):
        if f"psnr_h{h}" in e:
            copy = e.get(f"copy_latent_h{h}")        # absent in runs from before it was measured
            lines.append(f"| {h} | {e[f'psnr_h{h}']:.2f} | {e[f'floor_h{h}']:.2f} | {e[f'gain_h{h}']:+.2f} | "
                         f"{e[f'tokenizer_h{h}']:.2f} | {'n/a' if copy is None else f'{copy:.2f}'} |")
    lines += ["", "Repeat-last-frame: the last context frame itself; tokenizer reconstruction: the true future "
              "frames encoded and decoded (what the model could at best reach); repeat-last-latent: the last "
              "context frame's code decoded for every future frame (a dynamics model that does nothing).",
              "", "Curves: `tokenizer/curves.png`, `dynamics/curves.png`; rollout GIFs (ground truth left, "
              "prediction right) and image grids in `dynamics/images/`.", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
