"""tiny: unit-test sizes (16x16 frames, width 32, two layers), milliseconds per step.

For tests and smoke runs of the whole pipeline (`python -m quickstart --recipe tiny`), not for
a model worth looking at.
"""

from shared.config import DynamicsConfig, TokenizerConfig, TransformerConfig

from .base import AgentRecipe, DynamicsRecipe, Pipeline, Preset, Recipe, TokenizerRecipe

PRESET = Preset(
    "tiny", "unit-test sizes: 16x16 frames, width 32, two layers (milliseconds per step)",
    tokenizer=TokenizerConfig(
        transformer=TransformerConfig(d_model=32, n_heads=2, depth=2, dropout=0.0),
        image_height=16, image_width=16, channels=3, patch_size=4,
        n_latents=4, d_bottleneck=8, mae_p_min=0.0, mae_p_max=0.5),
    dynamics=DynamicsConfig(
        transformer=TransformerConfig(d_model=32, n_heads=2, depth=2, dropout=0.0),
        n_latents=4, d_bottleneck=8, packing_factor=2, n_register=2, n_agent=1, k_max=8),
)

# A high learning rate and few steps: tests check that training moves the loss, not where it ends.
TOKENIZER = TokenizerRecipe(steps=200, batch_size=8, frames=4, lr=1e-3, warmup_steps=20, optimizer="adamw",
                            ema_decay=0.0, eval_every=50, eval_sequences=4, mse_on="all")
DYNAMICS = DynamicsRecipe(steps=200, batch_size=8, frames=8, lr=1e-3, warmup_steps=20, optimizer="adamw",
                          ema_decay=0.0, eval_every=50, eval_sequences=4, bootstrap_start=50,
                          bootstrap_fraction=0.25)


# Behaviour cloning on the tiny world model: long enough windows for every multi-token distance.
AGENT = AgentRecipe(steps=60, batch_size=8, frames=10, lr=1e-3, warmup_steps=5, optimizer="adamw", ema_decay=0.0,
                    eval_every=30, eval_sequences=4, bootstrap_start=0, bootstrap_fraction=0.25, bc_weight=1.0,
                    reward_weight=1.0, relevant_quantile=0.5)

# Two cheap tasks with different action sizes, short episodes: collection takes seconds.
PIPELINE = Pipeline(tasks=("cartpole-swingup", "reacher-easy"), episodes_per_task=3, episode_steps=40,
                    data_dir="data/quickstart_tiny", run_dir="runs/quickstart_tiny",
                    policy="controller-heavy")

RECIPE = Recipe(name="tiny", description="smoke test of the pipeline: tiny models, two tasks, seconds of training",
                preset=PRESET, tokenizer=TOKENIZER, dynamics=DYNAMICS, agent=AGENT, pipeline=PIPELINE)
