"""Dynamics trainer: shortcut forcing on packed latents of a frozen tokenizer, evaluated by open-loop
rollouts from held-out contexts against the repeat-the-last-frame floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shared.data.format import open_dataset
from shared.data.windows import WindowSampler, split_episodes
from shared.io import CheckpointError
from shared.shortcut import draw_shortcut_indices, n_bootstrap_rows
from shared.train_options import check_frame_size, dynamics_config_from

from ..checkpoint import load_model
from ..dynamics import Dynamics
from ..losses import shortcut_loss
from . import distributed as D
from .common import (BatchStream, decode_chunked, encode_chunked, frame_mse, grid, psnr_of, shard, side_by_side_gif,
                     to_uint8, to_video, tokenizer_clip_frames)
from .latents import LatentWindowDataset, build_latent_cache
from .runner import Task

EVAL_HORIZONS = (1, 4, 8, 16)


class DynamicsTask(Task):
    kind = "dynamics"

    def __init__(self, options, world: D.World):
        self.options, self.world = options, world
        try:
            self.tokenizer = load_model(options.tokenizer, device=world.device, kind="tokenizer")
        except CheckpointError as e:
            raise SystemExit(f"error: --tokenizer: {e}") from e
        for p in self.tokenizer.parameters():
            p.requires_grad_(False)
        tok_cfg = self.tokenizer.config
        self.config = self.model_config(options, tok_cfg)
        self.dataset = dataset = open_dataset(options.data)
        check_frame_size(dataset, tok_cfg, options.data)
        # Never run the tokenizer on clips longer than it was trained on (see common.py).
        self.chunk = tokenizer_clip_frames(Path(options.tokenizer)) or options.frames
        self.train_eps, self.heldout_eps = split_episodes(dataset, holdout_per_task=options.holdout_per_task,
                                                          seed=0)
        if len(self.heldout_eps) == 0:
            raise SystemExit(f"error: {options.data} has no held-out episodes; collect at least 2 episodes per task")
        self.latent_cache = None
        if options.cache_latents:
            self.latent_cache = build_latent_cache(self.tokenizer, Path(options.tokenizer), Path(options.data),
                                                   self.latent_cache_dir(), self.chunk, world)
        self.stream = BatchStream(self.window_set(self.train_eps), self.video_batch_size, world, options.seed,
                                  options.workers)
        self._iter = iter(self.stream)
        self.frames_per_batch = options.batch_size * options.frames
        length = options.eval_context + options.eval_horizon
        evals = WindowSampler(dataset, length, episodes=self.heldout_eps)
        self.eval_windows = evals.evenly_spaced(options.eval_sequences)
        self.eval_sampler = evals
        self.eval_noise_seed = 1234      # the rollouts' starting noise: the same every evaluation
        torch.manual_seed(options.seed)      # identical initial weights on every rank and every run
        self.model = self.build_model().to(world.device)

    @property
    def video_batch_size(self) -> int:
        """Sequences per micro-batch that carry the video (shortcut-forcing) loss."""
        return self.options.batch_size

    def model_config(self, options, tokenizer_cfg):
        return dynamics_config_from(options, tokenizer_cfg)

    def latent_cache_dir(self) -> Path:
        """Where the data set's latents are cached (built there unless it already holds them)."""
        return Path(self.options.out) / "latents"

    def build_model(self):
        return Dynamics(self.config)

    def window_set(self, episodes):
        """The training windows of `episodes`: from the latent cache, or frames encoded on the fly."""
        from dreamer4_torch.data import WindowDataset
        if self.latent_cache is not None:
            return LatentWindowDataset(Path(self.options.data), self.latent_cache, self.options.frames,
                                       episodes=episodes)
        return WindowDataset(self.dataset, self.options.frames, episodes=episodes)

    def micro_batches(self):
        return self._iter

    def data_state(self) -> dict:
        return self.stream.state_dict()

    def load_data_state(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def latents(self, batch) -> torch.Tensor:
        if "latents" in batch:
            return batch["latents"].to(self.world.device, non_blocking=True).float()
        with torch.no_grad():
            return encode_chunked(self.tokenizer, to_video(batch["frames"], self.world.device), self.chunk).float()

    def loss(self, model, batch, step, rng, gen):
        o = self.options
        z1 = self.model.pack(self.latents(batch))
        B, T = z1.shape[:2]
        n_boot = n_bootstrap_rows(B, step, o.bootstrap_start, o.bootstrap_fraction)
        draw = draw_shortcut_indices(rng, B, T, self.config.k_max, n_boot)
        device = self.world.device
        # A fraction of micro-batches is trained without actions (the base token only).
        unconditional = o.unconditional_fraction > 0 and rng.random() < o.unconditional_fraction
        actions = None if unconditional else batch["actions"].to(device, non_blocking=True)
        act_mask = None if unconditional else batch["action_mask"].to(device, non_blocking=True)
        loss, metrics = shortcut_loss(model, z1, signal_idx=torch.from_numpy(draw.signal_idx).to(device),
                                      step_idx=torch.from_numpy(draw.step_idx).to(device),
                                      noise=torch.randn(z1.shape, generator=gen, device=device), n_bootstrap=n_boot, k_max=self.config.k_max,
                                      actions=actions, act_mask=act_mask)
        metrics["bootstrap_rows"] = float(n_boot)
        return loss, metrics

    @torch.no_grad()
    def evaluate(self, step: int, model):
        from ..sampler import rollout
        o = self.options
        C, H = o.eval_context, o.eval_horizon
        mine, weights = shard(len(self.eval_windows), self.world)
        batch = self.eval_sampler.read(self.eval_windows[mine])
        device = self.world.device
        video = to_video(torch.from_numpy(batch["frames"]), device)           # (b, C + H, 3, h, w)
        z = encode_chunked(self.tokenizer, video, self.chunk)
        actions = torch.from_numpy(batch["actions"]).to(device)
        act_mask = torch.from_numpy(batch["action_mask"]).to(device)
        model.eval()
        gen = torch.Generator(device=device).manual_seed(self.eval_noise_seed)
        pred = rollout(model, model.pack(z[:, :C]), actions, act_mask, H, n_steps=o.eval_sampling_steps,
                       noise=gen, use_cache=True)
        pred_video = decode_chunked(self.tokenizer, model.unpack(pred), self.chunk)
        recon_video = decode_chunked(self.tokenizer, z, self.chunk)
        target = video[:, C:]
        mse = {"psnr": frame_mse(pred_video, target),                         # (b, H) each
               "floor": frame_mse(video[:, C - 1:C].expand_as(target), target),
               "tokenizer": frame_mse(recon_video[:, C:], target),
               # the trivial latent model: repeat the last context frame's code (decoded)
               "copy_latent": frame_mse(recon_video[:, C - 1:C].expand_as(target), target)}
        w = torch.as_tensor(weights, dtype=torch.float64, device=device)[:, None]
        sums = {"n": float(w.sum())}
        for name, m in mse.items():
            per_h = (m.double() * w).sum(0)                                   # (H,)
            for h in range(1, H + 1):
                sums[f"{name}_h{h}"] = float(per_h[h - 1])
        sums = {k: v * self.world.world_size for k, v in D.all_reduce_mean(sums, self.world).items()}
        n = sums.pop("n")
        # PSNR of the MSE pooled over the held-out sequences at each horizon (upstream's convention).
        scalars = {}
        for h in [h for h in EVAL_HORIZONS if h <= H]:
            for name in ("psnr", "floor", "tokenizer", "copy_latent"):
                scalars[f"{name}_h{h}"] = psnr_of(sums[f"{name}_h{h}"] / n)
            scalars[f"gain_h{h}"] = scalars[f"psnr_h{h}"] - scalars[f"floor_h{h}"]
        pooled = {name: np.mean([sums[f"{name}_h{h}"] / n for h in range(1, H + 1)]) for name in mse}
        scalars["psnr_all"] = psnr_of(pooled["psnr"])
        scalars["gain_all"] = psnr_of(pooled["psnr"]) - psnr_of(pooled["floor"])
        images, gifs = {}, {}
        if self.world.is_main:
            k = min(4, video.shape[0])
            rows = []
            for i in range(k):
                rows += [to_uint8(target[i]), to_uint8(pred_video[i])]
            images["dynamics_rollout"] = grid(rows)
            shown = torch.cat([recon_video[:, :C], pred_video], dim=1)
            frames = [side_by_side_gif(to_uint8(video[i]), to_uint8(shown[i])) for i in range(k)]
            gifs["dynamics_rollout"] = [np.concatenate([f[t] for f in frames], axis=0) for t in range(C + H)]
        model.train()
        return scalars, images, gifs
