"""Training machinery: optimizers and schedules (``optim``), losses (``losses``), Orbax
checkpoints (``checkpointing``), metric writers, the generic loop (``trainer``) and one stage
module per model (``stages``). ``train.py`` at the repository root is the command line."""
