"""dmc128: 128x128 DMControl at exactly upstream's model sizes and training scripts' defaults.

For GPUs (hours of training): all 30 tasks, batches and learning rates as upstream's scripts
(tokenizer 8 clips of 8 frames, dynamics 24 sequences of 32 frames, lr 1e-4, AdamW, no EMA).
"""

from shared.config import DynamicsConfig, TokenizerConfig, TransformerConfig
from shared.data.tasks import TASK_NAMES

from .base import AgentRecipe, DynamicsRecipe, Pipeline, Preset, Recipe, TokenizerRecipe

PRESET = Preset(
    "dmc128", "128x128 DMControl, exactly upstream's defaults (21.4M + 42.6M parameters)",
    tokenizer=TokenizerConfig(
        transformer=TransformerConfig(d_model=256, n_heads=4, depth=8, mlp_ratio=4.0, dropout=0.05,
                                      time_every=1),
        image_height=128, image_width=128, channels=3, patch_size=4,
        n_latents=16, d_bottleneck=32, mae_p_min=0.0, mae_p_max=0.9),
    dynamics=DynamicsConfig(
        transformer=TransformerConfig(d_model=512, n_heads=4, depth=8, mlp_ratio=4.0, dropout=0.0,
                                      time_every=1),
        n_latents=16, d_bottleneck=32, packing_factor=2, n_register=4, n_agent=1, k_max=8,
        space_mode="wm_agent_isolated"),
)

TOKENIZER = TokenizerRecipe(steps=90_000, batch_size=8, frames=8, lr=1e-4, warmup_steps=1000, optimizer="adamw",
                            ema_decay=0.0, eval_every=5000, eval_sequences=96, mse_on="masked")
DYNAMICS = DynamicsRecipe(steps=40_000, batch_size=24, frames=32, lr=1e-4, warmup_steps=1000, optimizer="adamw",
                          ema_decay=0.0, eval_every=5000, eval_sequences=96, bootstrap_start=5000,
                          bootstrap_fraction=0.25)

# Behaviour cloning at upstream's sizes (not measured yet: it needs a GPU).
AGENT = AgentRecipe(steps=10_000, batch_size=24, frames=32, lr=1e-4, warmup_steps=500, optimizer="adamw",
                    ema_decay=0.0, eval_every=2500, eval_sequences=96, bootstrap_start=0, bootstrap_fraction=0.25,
                    bc_weight=1.0, reward_weight=1.0, relevant_quantile=0.5)

PIPELINE = Pipeline(tasks=TASK_NAMES, episodes_per_task=20, episode_steps=500,
                    data_dir="data/quickstart128", run_dir="runs/quickstart128")

RECIPE = Recipe(name="dmc128", description="GPU recipe: upstream's sizes, all 30 tasks, hours of training",
                preset=PRESET, tokenizer=TOKENIZER, dynamics=DYNAMICS, agent=AGENT, pipeline=PIPELINE)
