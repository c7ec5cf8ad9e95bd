"""Does the world model see the task? A linear probe from a frame's tokenizer latents to the
frame's physical state (the task's observation, recorded by the collector), fitted per task on
training episodes and scored on held-out episodes, as R² per state dimension.

    python -m dreamer4_torch.eval probe --tokenizer runs/quickstart/tokenizer --data data/agent

The key state of a task is what one frame shows (positions, joint angles, heights, vectors to
targets: shared.data.tasks.key_state); velocities are listed but need more than one frame. An
angle of a freely turning joint (reacher's shoulder, a cheetah's or hopper's pitch) is probed as its
cos and sin, since a frame shows it only modulo 2π (shared.data.tasks.circular_state). The
table gives, per task, the lowest and the mean R² over the key-state dimensions, then every
dimension. The split is the trainers' (shared.data.windows.split_episodes with seed 0), so with the
tokenizer's --holdout-per-task its held-out episodes are ones the tokenizer never trained on.

With --dynamics RUN (an agent-finetuned dynamics run or checkpoint: python -m dreamer4_torch.train
bc) the features are instead the dynamics model's agent output h_t for each probed frame t, computed
as the policy sees it: the frame and the ones before it in a window of the run's training length
(clean context latents, the recorded actions, the task's embedding). h_t has seen several frames, so
velocities can be recoverable from it where a single frame's latents cannot hold them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from shared.probe import fit_probe, r2_score


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dreamer4_torch.eval probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, required=True,
                    help="tokenizer run directory or checkpoint directory")
    ap.add_argument("--data", type=Path, required=True,
                    help="data set with recorded states (python -m shared.data.collect records them)")
    ap.add_argument("--tasks", default="",
                    help="comma-separated tasks to probe (default: every task of the data set)")
    ap.add_argument("--stride", type=int, default=4,
                    help="probe every STRIDE-th frame of each episode (default 4)")
    ap.add_argument("--holdout-per-task", type=float, default=None,
                    help="held-out episodes per task: a count (1, 2, ...) or a fraction in (0, 1) "
                         "(default: the tokenizer run's --holdout-per-task, else 1)")
    ap.add_argument("--dynamics", type=Path, default=None,
                    help="an agent-finetuned dynamics run or checkpoint: probe its agent output h_t instead of "
                         "the tokenizer's latents (its tokenizer must be --tokenizer)")
    ap.add_argument("--batch", type=int, default=256, help="frames per encoding batch (default 256)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file for the results (default: TOKENIZER/probe.json when TOKENIZER is a "
                         "run directory; 'none' writes nothing)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    return ap


def _holdout(args, tokenizer_dir: Path):
    if args.holdout_per_task is not None:
        value = args.holdout_per_task
        if value <= 0 or (value >= 1 and value != int(value)):
            raise SystemExit(f"error: --holdout-per-task must be a count >= 1 or a fraction in (0, 1), "
                             f"got {value}")
        return int(value) if value >= 1 else float(value)
    from shared.train_options import TokenizerOptions, options_from_json
    options = tokenizer_dir / "options.json"
    if options.is_file():
        try:
            return options_from_json(TokenizerOptions, options).holdout_per_task
        except (ValueError, TypeError):  # not a tokenizer run's options: the default split
            pass
    return 1


@torch.no_grad()
def episode_latents(tokenizer, dataset, episode: int, stride: int, chunk: int, batch: int) -> np.ndarray:
    """(frames, n_latents * d_bottleneck) float32: the latents of every `stride`-th frame of an
    episode, each encoded as the dynamics model sees it (in consecutive clips of `chunk` frames)."""
    from dreamer4_torch.train.common import encode_chunked, to_video

    rows = dataset.episode_rows(episode)
    frames = np.asarray(dataset.frames[rows])
    keep = np.arange(0, len(frames), stride)
    if chunk == 1:  # frames are encoded alone: encode only the ones probed, as clips of one frame
        video = to_video(torch.from_numpy(frames[keep]), "cpu")[:, None]
        z = torch.cat([tokenizer.encode(video[i:i + batch]) for i in range(0, len(keep), batch)])[:, 0]
    else:
        z = encode_chunked(tokenizer, to_video(torch.from_numpy(frames)[None], "cpu"), chunk)[0][keep]
    return z.reshape(z.shape[0], -1).float().numpy()


@torch.no_grad()
def episode_agent_outputs(model, tokenizer, dataset, episode: int, stride: int, chunk: int, batch: int,
                          window: int) -> np.ndarray:
    """(frames, D) float32: the agent output h_t of every `stride`-th frame t of an episode, each from a
    window of `window` frames ending at t (or the episode's first `window` frames, of which t sees only
    those up to itself: time attention is causal), as the policy sees its observations."""
    from shared.data.tasks import action_mask
    from shared.shortcut import context_labels
    from dreamer4_torch.train.common import encode_chunked, to_video

    rows = dataset.episode_rows(episode)
    frames = torch.from_numpy(np.array(dataset.frames[rows]))
    packed = model.pack(encode_chunked(tokenizer, to_video(frames[None], "cpu"), chunk))[0]   # (N, S, D)
    N = len(packed)
    W = min(window, N)
    task_id = int(dataset.episodes["task_id"][episode])
    actions = torch.from_numpy(np.array(dataset.actions[rows], np.float32))[:, :model.config.action_dim]
    masks = torch.from_numpy(action_mask(task_id)[:model.config.action_dim]).expand(N, -1).clone()
    masks[0] = 0.0                                   # an episode's first frame has no action
    keep = np.arange(0, N, stride)
    starts = np.maximum(0, keep - W + 1)
    index = torch.as_tensor(keep - starts)
    signal, step = context_labels(model.config.k_max)
    out = []
    for i in range(0, len(keep), batch):
        sel = torch.as_tensor(starts[i:i + batch])[:, None] + torch.arange(W)[None]   # (b, W)
        b = len(sel)
        _, h = model(packed[sel], signal_idx=torch.full((b, W), signal), step_idx=torch.full((b, W), step),
                     actions=actions[sel] * masks[sel], act_mask=masks[sel],
                     task_ids=torch.full((b,), task_id, dtype=torch.long))
        out.append(h[torch.arange(b), index[i:i + batch], 0])
    return torch.cat(out).float().numpy()


def probe_dataset(tokenizer, dataset, tasks, train_eps, heldout_eps, stride: int, chunk: int,
                  batch: int, progress: bool = True, agent=None) -> dict:
    """Per task: the probe's held-out R² per state dimension, the key-state summary, the counts.
    `agent`: (dynamics model, window) to probe its agent output instead of the tokenizer's latents."""
    from shared.data.tasks import TASK_IDS, circular_state, key_state

    table = dataset.episodes
    wanted = [TASK_IDS[task] for task in tasks]
    episodes = [e for e in np.concatenate([train_eps, heldout_eps]) if table["task_id"][e] in wanted]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(episodes), unit="episode", desc="encode", dynamic_ncols=True)
    features, targets = {}, {}
    for e in episodes:
        if agent is None:
            features[e] = episode_latents(tokenizer, dataset, int(e), stride, chunk, batch)
        else:
            features[e] = episode_agent_outputs(agent[0], tokenizer, dataset, int(e), stride, chunk,
                                                max(1, batch // agent[1]), agent[1])
        targets[e] = np.asarray(dataset.states[dataset.episode_rows(int(e))])[::stride]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results = {}
    for task in tasks:
        recorded = dataset.state_names(task)
        task_id = TASK_IDS[task]
        train = [e for e in train_eps if table["task_id"][e] == task_id]
        test = [e for e in heldout_eps if table["task_id"][e] == task_id]
        if len(train) < 2 or not test:
            raise SystemExit(f"error: {task}: {len(train)} training and {len(test)} held-out episode(s); the "
                             "probe needs at least 2 and 1 (more episodes, or another --holdout-per-task)")

        def target(episodes):  # freely turning angles as cos and sin: a frame shows them mod 2π
            return circular_state(task, recorded, np.concatenate(
                [targets[e][:, :len(recorded)] for e in episodes]))

        names, y = target(train)
        x = np.concatenate([features[e] for e in train])
        groups = np.concatenate([np.full(len(features[e]), e) for e in train])
        fit = fit_probe(x, y, groups)
        r2 = r2_score(target(test)[1], fit.predict(np.concatenate([features[e] for e in test])))
        key = [i for i in key_state(names) if np.isfinite(r2[i])]
        results[task] = {
            "state_names": names, "r2": [None if not np.isfinite(v) else round(float(v), 4) for v in r2],
            "key_state": [names[i] for i in key],
            "key_r2_min": float(np.min(r2[key])) if key else None,
            "key_r2_mean": float(np.mean(r2[key])) if key else None,
            "lambda": fit.lam, "cv_r2": fit.cv_r2,
            "train_episodes": len(train), "heldout_episodes": len(test),
            "train_frames": int(len(x)), "heldout_frames": int(sum(len(features[e]) for e in test))}
    return results


def format_table(results: dict) -> str:
    lines = [f"{'task':<20} {'key R² min':>10} {'key R² mean':>11} {'held-out':>9}  R² per dimension "
             "(key state first; — constant on the held-out episodes)"]
    for task, r in results.items():
        fmt = lambda v: "—" if v is None else f"{v:.2f}"
        key = set(r["key_state"])
        dims = sorted(range(len(r["state_names"])), key=lambda i: r["state_names"][i] not in key)
        per_dim = ", ".join(f"{r['state_names'][i]} {fmt(r['r2'][i])}" for i in dims)
        lines.append(f"{task:<20} {fmt(r['key_r2_min']):>10} {fmt(r['key_r2_mean']):>11} "
                     f"{r['heldout_frames']:>5} fr   {per_dim}")
    return "\n".join(lines)


def _checkpoint_dir(path: Path) -> Path:
    """A checkpoint directory as given, or a training run's newest (RUN/checkpoints/latest)."""
    latest = path / "checkpoints" / "latest"
    return latest if not (path / "config.json").exists() and latest.exists() else path


def _agent_model(path: Path, tokenizer):
    """(agent dynamics model, window) from --dynamics: a run (its training --frames is the window) or a
    checkpoint (window 16)."""
    from dreamer4_torch.checkpoint import load_model
    from shared.config import ConfigError, check_compatible
    from shared.io import CheckpointError
    try:
        model = load_model(_checkpoint_dir(path), kind="dynamics").eval()
        check_compatible(tokenizer.config, model.config)
    except (CheckpointError, ConfigError) as e:
        raise SystemExit(f"error: --dynamics {path}: {e}") from None
    if not model.config.n_tasks:
        raise SystemExit(f"error: --dynamics {path} has no agent token input (a pretrained model's agent token "
                         "sees nothing); probe a finetuned run (python -m dreamer4_torch.train bc)")
    window = 16
    options = path / "options.json"
    if options.is_file():
        window = int(json.loads(options.read_text()).get("frames", window))
    return model, window


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.stride < 1 or args.batch < 1 or args.threads < 0:
        raise SystemExit("error: --stride and --batch must be >= 1, --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    from dreamer4_torch.checkpoint import load_model
    from dreamer4_torch.train.common import tokenizer_clip_frames
    from shared.data.format import DatasetError, open_dataset
    from shared.data.tasks import UnknownTaskError, resolve_tasks
    from shared.data.windows import split_episodes
    from shared.io import CheckpointError

    try:
        tokenizer = load_model(_checkpoint_dir(args.tokenizer), kind="tokenizer")
    except CheckpointError as e:
        raise SystemExit(f"error: --tokenizer {args.tokenizer}: {e}") from None
    try:
        dataset = open_dataset(args.data)
    except DatasetError as e:
        raise SystemExit(f"error: --data: {e}") from None
    if dataset.states is None:
        raise SystemExit(f"error: --data {args.data} was recorded without states; collect it again "
                         "(python -m shared.data.collect records them) to probe it")
    cfg = tokenizer.config
    if (dataset.height, dataset.width) != (cfg.image_height, cfg.image_width):
        raise SystemExit(f"error: --data has {dataset.height}x{dataset.width} frames, the tokenizer takes "
                         f"{cfg.image_height}x{cfg.image_width}")
    try:
        tasks = resolve_tasks(args.tasks) if args.tasks else list(dataset.tasks)
    except UnknownTaskError as e:
        raise SystemExit(f"error: --tasks: {e}") from None
    missing = [t for t in tasks if t not in dataset.tasks]
    if missing:
        raise SystemExit(f"error: --tasks: the data set has no {', '.join(missing)} (it has {', '.join(dataset.tasks)})")
    holdout = _holdout(args, args.tokenizer)
    train_eps, heldout_eps = split_episodes(dataset, holdout_per_task=holdout, seed=0)
    chunk = tokenizer.config.clip_frames or tokenizer_clip_frames(args.tokenizer) or 1
    agent = None if args.dynamics is None else _agent_model(args.dynamics, tokenizer)
    results = probe_dataset(tokenizer, dataset, tasks, train_eps, heldout_eps, args.stride, chunk,
                            args.batch, progress=sys.stderr.isatty(), agent=agent)
    what = "tokenizer latents" if agent is None else f"agent output h_t (windows of {agent[1]} frames)"
    print(f"linear probe: {what} -> state, every {args.stride}th frame, {holdout} held-out "
          f"episode(s) per task, clips of {chunk} frame(s)")
    print(format_table(results))
    out = args.out
    if out is None and agent is not None and (args.dynamics / "options.json").is_file():
        out = args.dynamics / "probe_agent.json"
    elif out is None and agent is None and (args.tokenizer / "options.json").is_file():
        out = args.tokenizer / "probe.json"
    if out is not None and str(out) != "none":
        from shared.io import atomic_write_bytes
        record = {"tokenizer": str(args.tokenizer), "data": str(args.data), "stride": args.stride,
                  "features": "latents" if agent is None else "agent_output",
                  "dynamics": None if agent is None else str(args.dynamics),
                  "holdout_per_task": holdout, "tasks": results}
        atomic_write_bytes(out, (json.dumps(record, indent=1) + "\n").encode())
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
