"""The agent in the real tasks: a behaviour-cloned (or RL) run's policy acting in DMControl, closed loop.

    python -m dreamer4_torch.eval policy runs/agent/bc --episodes 10

Each observation is rendered as the data set's frames were (size and render options from its
meta.json), encoded by the run's tokenizer, packed and given to the dynamics model with the task's
embedding in the agent token; the policy head's distance-1 distribution chooses the next action (its
mean by default, --sample to draw from it), clipped to [-1, 1] on the task's action dimensions. The
model's context window moves as in the sampler (shared.sampling): "slide" (default) runs the newest
frame with the `--context` frames before it at window-relative positions, which is what the training
windows showed the agent (the sampler's cached slide mode rebuilds its cache from the window in the
same one pass); "roll" (models with time_rope) caches each frame's keys and values once and rolls the
cache, the sampler's roll mode: cheaper, but a frame then carries information from beyond the window.
All tasks' episodes step together as one batch.

Beside the agent, the same episode seeds are played by a uniform-random policy, and the data set's
episodes of each task give its data returns (mean and best). Evaluation seeds are disjoint from the
collector's. Printed: a table per task of mean +- standard error over the episodes; written:
RUN/policy_eval.json and, for the first episode of each task, RUN/videos/policy_TASK.gif (the
observation beside the tokenizer's decoding of what the model saw).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from shared.data.tasks import TASK_IDS, action_mask, get_task

# Evaluation episodes use collector seed EVAL_SEED + --seed: far from the data sets' seeds (0, 1, ...).
EVAL_SEED = 1_000_003


def build_parser():
    from .runs import run_parser
    ap = run_parser("python -m dreamer4_torch.eval policy", __doc__)
    ap.add_argument("--tasks", default="", help="comma-separated tasks (default: every task of the run's data set)")
    ap.add_argument("--episodes", type=int, default=10, help="episodes per task and policy (default 10)")
    ap.add_argument("--episode-steps", type=int, default=0,
                    help="agent steps per episode (default: the data set's, so that returns compare)")
    ap.add_argument("--context", type=int, default=0,
                    help="earlier frames the agent sees (default: the run's training --frames minus 1)")
    ap.add_argument("--window", choices=["slide", "roll"], default="slide",
                    help="how the context window moves: slide (default; as in training) or roll (KV-cached; "
                         "models with time_rope)")
    ap.add_argument("--sample", action="store_true", help="draw actions from the policy (default: its mean)")
    ap.add_argument("--seed", type=int, default=0, help="evaluation seed (episode starts, sampled actions)")
    ap.add_argument("--no-random", action="store_true", help="skip the uniform-random baseline")
    ap.add_argument("--videos", type=int, default=1, help="tasks' first episodes saved as GIFs: 1 (default) or 0")
    ap.add_argument("--out", default=None, help="JSON file (default RUN/policy_eval.json; 'none' writes nothing)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


class PolicyRunner:
    """Closed-loop agent state for a batch of B environments: feed each new observation's packed latents
    and the action that produced it, get the policy's distribution for the next action."""

    def __init__(self, model, task_ids: np.ndarray, context: int, window_mode: str = "slide"):
        from shared.sampling import check_modes
        from shared.shortcut import context_labels
        self.model = model
        cfg = model.config
        check_modes("upstream", window_mode, cfg.transformer.time_rope)
        self.signal, self.step = context_labels(cfg.k_max)
        self.task_ids = torch.as_tensor(task_ids, dtype=torch.long)
        self.context = int(context)
        self.roll = window_mode == "roll"
        self.cache = model.new_cache(start=0) if self.roll else None
        self.frames: list = []          # slide: the last context + 1 frames' inputs
        self.masks = torch.from_numpy(np.stack([action_mask(int(t)) for t in task_ids]))[:, :cfg.action_dim]

    @torch.no_grad()
    def observe(self, packed: torch.Tensor, action: Optional[torch.Tensor]):
        """packed (B, S, D) latents of the new frame; action (B, A) that produced it (None at an
        episode's first frame). Returns (mean, std) of the next action, each (B, A)."""
        B, dev = packed.shape[0], packed.device
        if self.masks.device != dev:
            self.masks, self.task_ids = self.masks.to(dev), self.task_ids.to(dev)
        if action is None:
            action, mask = torch.zeros(B, self.model.config.action_dim, device=dev), torch.zeros_like(self.masks)
        else:
            mask = self.masks
        labels = lambda T: (torch.full((B, T), self.signal, device=dev),  # noqa: E731
                            torch.full((B, T), self.step, device=dev))
        if self.roll:
            sig, stp = labels(1)
            _, h = self.model(packed[:, None], signal_idx=sig, step_idx=stp, actions=action[:, None],
                              act_mask=mask[:, None], task_ids=self.task_ids, cache=self.cache, commit=1,
                              time_window=self.context)
            if self.cache.length > self.context:
                self.cache.drop_oldest(self.cache.length - self.context)
        else:
            self.frames = (self.frames + [(packed, action * mask, mask)])[-(self.context + 1):]
            z, a, m = (torch.stack(x, dim=1) for x in zip(*self.frames))
            sig, stp = labels(z.shape[1])
            _, h = self.model(z, signal_idx=sig, step_idx=stp, actions=a, act_mask=m, task_ids=self.task_ids)
            h = h[:, -1:]
        self.h = h[:, -1:]
        mean, std = self.model.policy(self.h)
        return mean[:, 0, 0] * self.masks, std[:, 0, 0]

    @torch.no_grad()
    def predicted_reward(self) -> torch.Tensor:
        """(B,) the reward head's distance-1 prediction at the last observed frame: the reward of the
        transition the next action makes (shared.agent)."""
        from shared.agent import reward_bins
        from ..agent import reward_mean
        logits = self.model.reward_logits(self.h)[:, 0, 0]
        return reward_mean(logits, torch.from_numpy(reward_bins(logits.shape[-1])).to(logits.device))


class FrameEncoder:
    """Encodes each new frame as the trainers' latents were: in clips of the tokenizer's training length
    (a frame's latent depends on the earlier frames of its clip)."""

    def __init__(self, tokenizer, chunk: int):
        self.tokenizer, self.chunk = tokenizer, max(1, int(chunk))
        self.clip: list = []

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """frames (B, 3, H, W) uint8 -> latents (B, n_latents, d_bottleneck) of the newest frame."""
        if len(self.clip) == self.chunk:
            self.clip = []
        self.clip.append(torch.from_numpy(frames).float() / 255.0)
        self.latents = self.tokenizer.encode(torch.stack(self.clip, dim=1))   # (B, clip so far, N, D)
        return self.latents[:, -1]

    @torch.no_grad()
    def decode_newest(self, rows) -> torch.Tensor:
        """The tokenizer's decoding of the newest frame of episodes `rows`, (len(rows), 3, H, W): the
        clip so far is decoded together, as in training (the decoder attends to the clip's earlier
        frames, so a latent decoded alone is not what the tokenizer reconstructs)."""
        return self.tokenizer.decode(self.latents[rows])[:, -1]


def _summary(returns) -> dict:
    r = np.asarray(returns, np.float64)
    se = float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else None
    return {"mean": float(r.mean()), "se": se, "n": int(len(r)), "returns": [float(x) for x in r]}


def data_returns(dataset, task: str, steps: int) -> Optional[dict]:
    """Mean and best return of the data set's full-length episodes of `task` (None if it has none)."""
    table = dataset.episodes
    rows = (table["task_id"] == TASK_IDS[task]) & (table["length"] == steps + 1)
    if not rows.any():
        return None
    r = table["return"][rows].astype(np.float64)
    return {"mean": float(r.mean()), "best": float(r.max()), "n": int(rows.sum())}


def random_returns(task: str, seeds: list[int], steps: int, size: int, render: dict, rng) -> list[float]:
    from shared.data.tasks import make_env
    out = []
    with make_env(task, seed=0, size=size, **render) as env:
        for seed in seeds:
            env.reset(seed)
            total = 0.0
            for _ in range(steps):
                total += env.step(rng.uniform(-1, 1, env.action_dim), render=False)[1]
            out.append(total)
    return out


def run_agent(model, tokenizer, chunk: int, tasks: list[str], seeds: dict, steps: int, size: int, render: dict,
              context: int, window_mode: str, sample: bool, rng, videos: bool, progress: bool):
    """Play every (task, seed) episode at once. Returns ({task: [returns]}, {task: (observed, decoded)})."""
    from tqdm import tqdm

    from shared.data.tasks import make_env
    from ..train.common import to_uint8
    episodes = [(task, s) for task in tasks for s in seeds[task]]
    envs = [make_env(task, seed=0, size=size, **render) for task, _ in episodes]
    try:
        task_ids = np.array([TASK_IDS[t] for t, _ in episodes])
        runner = PolicyRunner(model, task_ids, context, window_mode)
        encode = FrameEncoder(tokenizer, chunk)
        first = {task: episodes.index((task, seeds[task][0])) for task in tasks}
        shown = {task: ([], []) for task in tasks} if videos else {}
        frames = np.stack([env.reset(seed) for env, (_, seed) in zip(envs, episodes)])
        returns = np.zeros(len(envs))
        action = None
        bar = tqdm(range(steps + 1), desc="policy", unit="step", disable=not progress, leave=False)
        for t in bar:
            z = encode(frames)
            if videos:
                decoded = encode.decode_newest([first[k] for k in tasks])
                for i, task in enumerate(tasks):
                    shown[task][0].append(frames[first[task]].transpose(1, 2, 0))
                    shown[task][1].append(to_uint8(decoded[i]))
            mean, std = runner.observe(model.pack(z[:, None])[:, 0], action)
            if t == steps:
                break
            if sample:
                noise = torch.from_numpy(rng.standard_normal(mean.shape).astype(np.float32))
                mean = mean + std * noise * runner.masks
            action = mean.clamp(-1, 1) * runner.masks
            out = []
            for i, (env, (task, _)) in enumerate(zip(envs, episodes)):
                frame, reward = env.step(action[i, :get_task(task).action_dim].double().numpy())
                returns[i] += reward
                out.append(frame)
            frames = np.stack(out)
            bar.set_postfix_str(f"mean return so far {returns.mean():.1f}")
    finally:
        for env in envs:
            env.close()
    by_task = {task: [float(returns[i]) for i, (t, _) in enumerate(episodes) if t == task] for task in tasks}
    return by_task, shown


def format_table(results: dict) -> str:
    head = f"{'task':<26}{'agent':>18}{'random':>18}{'data mean':>11}{'data best':>11}  episodes"
    lines = [head, "-" * len(head)]
    for task, r in results["tasks"].items():
        cell = lambda s: "-" if s is None else f"{s['mean']:.1f} ± {s['se'] or 0:.1f}"  # noqa: E731
        data = r["data"]
        lines.append(f"{task:<26}{cell(r['agent']):>18}{cell(r.get('random')):>18}"
                     f"{'-' if data is None else format(data['mean'], '.1f'):>11}"
                     f"{'-' if data is None else format(data['best'], '.1f'):>11}  {r['agent']['n']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from shared.data.collect import episode_seed
    from shared.data.format import DatasetError, open_dataset
    from shared.data.render import configure_gl
    from shared.data.tasks import resolve_tasks
    from shared.io import CheckpointError, atomic_write_bytes

    from ..checkpoint import load_model
    from ..train.common import side_by_side_gif, tokenizer_clip_frames
    from .runs import checked_checkpoint, load_dynamics, recorded_options

    args = build_parser().parse_args(argv)
    ckpt = checked_checkpoint(args)
    options = recorded_options(args)
    if args.episodes < 1:
        raise SystemExit(f"error: --episodes must be >= 1, got {args.episodes}")
    model = load_dynamics(ckpt).eval()
    if not model.config.agent_heads or not model.config.n_tasks:
        raise SystemExit(f"error: {ckpt} is a dynamics model without agent heads; finetune one with "
                         "`python -m dreamer4_torch.train bc --dynamics ...` and evaluate that run")
    try:
        tokenizer = load_model(options.tokenizer, kind="tokenizer")
        dataset = open_dataset(options.data)
    except (CheckpointError, DatasetError) as e:
        raise SystemExit(f"error: {e}") from None
    source = dataset.meta.get("source", {})
    steps = args.episode_steps or int(source.get("episode_steps", 500))
    size = dataset.height
    render = {k: source[k] for k in ("supersample", "shadows", "reflections") if k in source}
    try:
        tasks = resolve_tasks(args.tasks) if args.tasks else resolve_tasks(list(dataset.meta["tasks"]))
    except KeyError as e:
        raise SystemExit(f"error: --tasks: {e}") from None
    context = args.context or max(1, options.frames - 1)
    chunk = tokenizer_clip_frames(Path(options.tokenizer)) or 1
    configure_gl()
    rng = np.random.default_rng(args.seed)
    seeds = {t: [episode_seed(EVAL_SEED + args.seed, t, i) for i in range(args.episodes)] for t in tasks}
    print(f"policy: {len(tasks)} task(s) x {args.episodes} episode(s) of {steps} steps, "
          f"{'sampled' if args.sample else 'mean'} actions, context {context} frames "
          f"({args.window}), {size}x{size}", flush=True)
    t0 = time.time()
    try:
        agent, shown = run_agent(model, tokenizer, chunk, tasks, seeds, steps, size, render, context, args.window,
                                 args.sample, rng, bool(args.videos), not args.quiet)
    except ValueError as e:       # a window mode the model cannot run exactly
        raise SystemExit(f"error: --window: {e}") from None
    t_agent = time.time() - t0
    results = {"run": str(args.run), "checkpoint": str(ckpt), "episode_steps": steps, "sample": args.sample,
               "context": context, "window": args.window, "seed": args.seed, "seconds_agent": t_agent, "tasks": {}}
    for task in tasks:
        entry = {"agent": _summary(agent[task]), "data": data_returns(dataset, task, steps)}
        if not args.no_random:
            entry["random"] = _summary(random_returns(task, seeds[task], steps, size, render, rng))
        results["tasks"][task] = entry
    results["seconds"] = time.time() - t0
    print(format_table(results))
    print(f"({results['seconds']:.0f} s; agent {t_agent:.0f} s)")
    if shown:
        from PIL import Image
        video_dir = args.run / "videos"
        video_dir.mkdir(exist_ok=True)
        for task, (obs, dec) in shown.items():
            frames = [Image.fromarray(f) for f in side_by_side_gif(np.stack(obs), np.stack(dec))]
            path = video_dir / f"policy_{task}.gif"
            tmp = path.with_suffix(".tmp.gif")
            frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=50, loop=0)
            tmp.replace(path)
    out = None if args.out == "none" else Path(args.out) if args.out else args.run / "policy_eval.json"
    if out is not None:
        atomic_write_bytes(out, (json.dumps(results, indent=2) + "\n").encode())
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
