"""A tiny regression stage that runs the whole training machinery in seconds (tests, benchmarks).

    python train.py --config configs/train_toy.py --workdir /tmp/toy --config.total_steps=200
"""
from hmr_jax.training.config import base_config


def get_config():
    """The toy regression stage (``hmr_jax.training.stages.toy``)."""
    c = base_config()
    c.stage = "toy"
    c.batch_size = 16
    c.total_steps = 100
    c.log_every_steps = 10
    c.checkpoint.every_steps = 20
    c.optim.name = "adamw"
    c.optim.base_lr = 3e-3
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "warmup_cosine"
    c.optim.warmup_epochs = 1.0
    c.optim.total_epochs = 10.0
    c.data.path = ""            # an ArrayRecord file of toy examples, or "" for in-memory data
    c.data.num_examples = 256
    c.toy = dict(width=32, nan_at_step=-1)
    return c
