"""Tokenizer trainer: masked autoencoding of short clips, evaluated by full-frame PSNR on held-out episodes."""

from __future__ import annotations

import torch

from shared.data.format import open_dataset
from shared.data.windows import WindowSampler, split_episodes
from shared.train_options import check_frame_size, tokenizer_config_from

from ..losses import tokenizer_loss
from ..tokenizer import Tokenizer
from . import distributed as D
from .common import BatchStream, frame_mse, grid, psnr, psnr_of, shard, to_uint8, to_video
from .runner import Task


class TokenizerTask(Task):
    kind = "tokenizer"

    def __init__(self, options, world: D.World):
        from dreamer4_torch.data import WindowDataset
        self.options, self.world = options, world
        self.config = tokenizer_config_from(options)
        dataset = open_dataset(options.data)
        check_frame_size(dataset, self.config, options.data)
        train_eps, self.heldout_eps = split_episodes(dataset, holdout_per_task=options.holdout_per_task, seed=0)
        if len(self.heldout_eps) == 0:
            raise SystemExit(f"error: {options.data} has no held-out episodes (--holdout-per-task "
                             f"{options.holdout_per_task}); collect at least 2 episodes per task")
        self.stream = BatchStream(WindowDataset(dataset, options.frames, episodes=train_eps), options.batch_size,
                                  world, options.seed, options.workers)
        self._iter = iter(self.stream)
        self.frames_per_batch = options.batch_size * options.frames
        # Fixed held-out clips, spread over all held-out windows (the same every evaluation).
        evals = WindowSampler(dataset, options.frames, episodes=self.heldout_eps)
        self.eval_windows = evals.evenly_spaced(options.eval_sequences)
        self.eval_sampler = evals
        torch.manual_seed(options.seed)      # identical initial weights on every rank and every run
        self.model = Tokenizer(self.config).to(world.device)
        self.perceptual = None
        if options.lpips_alexnet or options.lpips_lin:
            if not (options.lpips_alexnet and options.lpips_lin):
                raise SystemExit("error: the LPIPS term needs both --lpips-alexnet and --lpips-lin")
            from .lpips import LPIPS
            self.perceptual = LPIPS.from_files(options.lpips_alexnet, options.lpips_lin).to(world.device).eval()
        elif world.is_main:
            print("LPIPS term off (pass --lpips-alexnet and --lpips-lin weight files to enable it)", flush=True)

    def micro_batches(self):
        return self._iter

    def data_state(self) -> dict:
        return self.stream.state_dict()

    def load_data_state(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def loss(self, model, batch, step, rng, gen):
        video = to_video(batch["frames"], self.world.device)
        B, T = video.shape[:2]
        keep = self.model.draw_keep_mask(B, T, self.world.device, generator=gen)
        out = model(video, keep_mask=keep)
        c = self.config
        return tokenizer_loss(out, image_shape=(c.channels, c.image_height, c.image_width), patch_size=c.patch_size,
                              mse_on=self.options.mse_on, contrast_weight=self.options.contrast_weight,
                              perceptual=self.perceptual,
                              perceptual_weight=self.options.lpips_weight)

    @torch.no_grad()
    def evaluate(self, step: int, model):
        mine, weights = shard(len(self.eval_windows), self.world)
        batch = self.eval_sampler.read(self.eval_windows[mine])
        video = to_video(torch.from_numpy(batch["frames"]), self.world.device)
        model.eval()
        with torch.autocast(self.world.device.type, dtype=torch.bfloat16,
                            enabled=self.world.device.type == "cuda" and self.options.precision != "fp32"):
            recon = model.decode(model.encode(video)).float()
        # Headline: PSNR of the MSE pooled over all held-out frames (upstream's convention);
        # also the mean of per-frame PSNRs.
        mse = frame_mse(recon, video)                                  # (b, T)
        w = torch.as_tensor(weights, dtype=torch.float64, device=mse.device)
        totals = {"mse": float((mse.double().mean(1) * w).sum()),
                  "psnr_frame_mean": float((psnr(recon, video).double().mean(1) * w).sum()), "n": float(w.sum())}
        totals = {k: v * self.world.world_size for k, v in D.all_reduce_mean(totals, self.world).items()}
        scalars = {"psnr": psnr_of(totals["mse"] / totals["n"]), "mse": totals["mse"] / totals["n"],
                   "psnr_frame_mean": totals["psnr_frame_mean"] / totals["n"]}
        images = {}
        if self.world.is_main:
            k = min(4, video.shape[0])
            rows = []
            for i in range(k):
                rows += [to_uint8(video[i]), to_uint8(recon[i])]
            images["tokenizer_heldout"] = grid(rows)
        model.train()
        return scalars, images, {}
