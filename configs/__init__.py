"""ml_collections configs: one file per released model and per training recipe.

Every file has a ``get_config()`` (``get_config(arg)`` where it takes an argument) and a
docstring with its command line. ``train.py`` / ``evaluate.py`` take a path; ``:ARG`` passes the
argument and ``--config.KEY=VALUE`` overrides any value::

    python train.py --config configs/train_mega.py:hrnet --workdir runs/mega_hrnet \\
        --config.batch_size=32

In Python: ``hmr_jax.training.config.load_config("train_mega", "hrnet")`` (a name in this
package, or a path; ``"configs/train_mega.py:hrnet"`` works too).

Released models, named as the released checkpoints (``mesh_vqvae_54``, ``mega_pretrained``,
``mega_{hrnet,resnet,vit}``, ``vqhps_{hrnet,resnet}``): the model sizes and inference settings.
They import nothing but ml_collections (``mesh_vqvae_54`` also the library's ``RELEASED_54``),
and the converters (``hmr_jax.conversion``) take what the weights do not say (heads,
``cond_length``, crop size, dropout) from them. ``sample.py`` finds the tokenizer in
``converted/mesh_vqvae_54`` and the faces, connection files and joint regressor in
``body_models/`` by default; crops are RGB, normalised with the ImageNet mean / std.
``decoding`` holds the evaluation settings: MEGA deterministic (all masked, one pass) or
stochastic (``steps`` iterations, initial Gumbel temperature ``gen_temp``, ``num_samples``
hypotheses per image), VQ-HPS ``single_pass`` (its 51-number pose initialisation: the 17 H36M
joints, ``body_models/J_regressor_h36m.npy``, of the T-pose, ``hmr_jax.models.vqhps.pose_from_mesh``);
``faithful=True`` reproduces the original code's quirks (``hmr_jax.models.decoding``).

Training recipes (``train_*.py``): ``hmr_jax.training.config.base_config()`` (the fields every
stage has) + the released model's entries + the recipe's values, each written in the file. A
recipe derives from at most one other (``train_demo_mega`` from ``train_mega``,
``train_demo_tokenizer`` and ``train_mesh_vqvae_spiral`` from ``train_mesh_vqvae``); what they
share is in ``configs/common.py``.
"""
