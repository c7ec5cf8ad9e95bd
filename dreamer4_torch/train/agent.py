"""Behaviour-cloning finetuning (the paper's phase 2): the pretrained dynamics model gets agent tokens
(a task embedding under the `wm_agent` mask) and the policy and reward heads (shared.agent), and
trains on the paper's mix. Each micro-batch has two halves:

  video half: uniform windows of the training episodes with the shortcut-forcing loss, as in
              pretraining (keeps the world model's predictions);
  agent half: windows of the task-relevant training episodes (shared.agent.relevant_episodes) with
              the behaviour-cloning loss and the reward loss on the agent output.

The agent pass runs on both halves, encoded as the sampler sees context frames (clean latents
labelled with shared.shortcut.context_labels), so the policy trains on the inputs it acts on: the BC
loss on the agent half only, the reward loss on both (a reward head that has seen only good episodes
could not tell a poor action from a good one, which reinforcement learning in imagination needs).
The evaluation adds held-out action and reward errors to the dynamics trainer's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shared.agent import agent_config, base_config, relevant_episodes
from shared.config import ConfigError, check_compatible
from shared.data.tasks import TASK_NAMES
from shared.io import CheckpointError, read_config
from shared.shortcut import context_labels, inference_plan

from ..agent import agent_loss
from ..checkpoint import load_for_agent
from . import distributed as D
from .common import BatchStream, encode_chunked, shard, to_video
from .dynamics import DynamicsTask


class AgentTask(DynamicsTask):
    kind = "bc"

    def __init__(self, options, world: D.World):
        super().__init__(options, world)
        table = self.dataset.episodes
        self.relevant_eps = relevant_episodes(table["return"], table["task_id"], self.train_eps,
                                              options.relevant_quantile)
        self.agent_stream = BatchStream(self.window_set(self.relevant_eps), options.batch_size - self.video_batch_size,
                                        world, options.seed + 1, options.workers)
        self._agent_iter = iter(self.agent_stream)

    @property
    def video_batch_size(self) -> int:
        return self.options.batch_size // 2

    def model_config(self, options, tokenizer_cfg):
        try:
            pretrained = read_config(Path(options.dynamics))
        except CheckpointError as e:
            raise SystemExit(f"error: --dynamics: {e}") from e
        if pretrained.kind != "dynamics":
            raise SystemExit(f"error: --dynamics {options.dynamics} holds a {pretrained.kind} checkpoint")
        try:
            check_compatible(tokenizer_cfg, pretrained)
            cfg = agent_config(base_config(pretrained), len(TASK_NAMES), mtp_length=options.mtp_length)
            inference_plan(cfg.k_max, options.eval_sampling_steps)
        except (ConfigError, ValueError) as e:
            raise SystemExit(f"error: --dynamics {options.dynamics}: {e}") from e
        return cfg

    def latent_cache_dir(self) -> Path:
        """The pretrained dynamics run's latent cache when it holds these latents (the same tokenizer
        weights, data set and clip length: its fingerprint says so), else this run's own: the frozen
        tokenizer's encoding of the data set is not done twice."""
        from .latents import cache_is_valid, fingerprint
        expected = fingerprint(Path(self.options.tokenizer), Path(self.options.data), self.chunk)
        checkpoint = Path(self.options.dynamics)
        for run_dir in (checkpoint.parent.parent, checkpoint):      # RUN/checkpoints/step_N, or a run directory
            if cache_is_valid(run_dir / "latents", expected):
                return run_dir / "latents"
        return super().latent_cache_dir()

    def build_model(self):
        try:
            return load_for_agent(self.options.dynamics, self.config)
        except CheckpointError as e:
            raise SystemExit(f"error: --dynamics: {e}") from e

    def micro_batches(self):
        while True:
            yield next(self._iter), next(self._agent_iter)

    def data_state(self) -> dict:
        return {"video": self.stream.state_dict(), "agent": self.agent_stream.state_dict()}

    def load_data_state(self, state: dict) -> None:
        self.stream.load_state_dict(state["video"])
        self.agent_stream.load_state_dict(state["agent"])

    def agent_pass(self, model, batch, policy_weight=None):
        """BC and reward losses of a batch of windows, encoded as clean context frames; `model` is the
        Dynamics or its DDP / compiled wrapper (whose module holds the heads)."""
        device = self.world.device
        heads = getattr(model, "module", model)
        heads = getattr(heads, "_orig_mod", heads)
        z = self.model.pack(self.latents(batch))
        B, T = z.shape[:2]
        signal, step = context_labels(self.config.k_max)
        actions = batch["actions"].to(device, non_blocking=True)
        act_mask = batch["action_mask"].to(device, non_blocking=True)
        _, h = model(z, signal_idx=torch.full((B, T), signal, device=device),
                     step_idx=torch.full((B, T), step, device=device), actions=actions, act_mask=act_mask,
                     task_ids=torch.as_tensor(batch["task_id"], device=device).long())
        return agent_loss(heads, h, actions, act_mask, batch["rewards"].to(device, non_blocking=True),
                          policy_weight=policy_weight)

    def loss(self, model, batch, step, rng, gen):
        video, relevant = batch
        o = self.options
        video_loss, metrics = super().loss(model, video, step, rng, gen)
        keys = ("actions", "action_mask", "rewards", "task_id", "latents" if "latents" in video else "frames")
        both = {k: torch.cat([video[k], relevant[k]]) for k in keys}
        policy_weight = torch.cat([torch.zeros(len(video["task_id"])), torch.ones(len(relevant["task_id"]))])
        bc, reward, agent_metrics = self.agent_pass(model, both, policy_weight.to(self.world.device))
        loss = video_loss + o.bc_weight * bc + o.reward_weight * reward
        metrics = {"video_loss": metrics.pop("loss"), **metrics, **agent_metrics, "loss": loss.detach()}
        return loss, metrics

    @torch.no_grad()
    def evaluate(self, step: int, model):
        scalars, images, gifs = super().evaluate(step, model)
        # Held-out BC and reward errors on the video evaluation's windows (all held-out episodes).
        mine, weights = shard(len(self.eval_windows), self.world)
        batch = {k: torch.from_numpy(v) for k, v in self.eval_sampler.read(self.eval_windows[mine]).items()}
        batch["latents"] = encode_chunked(self.tokenizer, to_video(batch.pop("frames"), self.world.device), self.chunk)
        model.eval()
        sums = {"n": float(np.sum(weights))}
        for start in range(0, len(mine), 16):
            part = {k: v[start:start + 16] for k, v in batch.items()}
            w = float(np.sum(weights[start:start + 16]))
            _, _, metrics = self.agent_pass(model, part, policy_weight=torch.as_tensor(
                weights[start:start + 16], dtype=torch.float32, device=self.world.device))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * w
        model.train()
        sums = {k: v * self.world.world_size for k, v in D.all_reduce_mean(sums, self.world).items()}
        n = max(sums.pop("n"), 1e-9)
        L = self.config.mtp_length
        for k in ("bc", "reward", "action_mse_1", f"action_mse_{L}", "reward_abs_err_1", f"reward_abs_err_{L}"):
            scalars[f"heldout_{k}"] = sums[k] / n
        return scalars, images, gifs
