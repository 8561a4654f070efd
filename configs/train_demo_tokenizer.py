"""The embedded demo's tokenizer: a small Mesh-VQ-VAE over Anny's 615-vertex
``notoes_collapse5pc`` mesh (the connection hierarchy ``data_prep.synthetic`` writes to
``DATA/topology``: 615 -> 166 -> 30 points, so 30 tokens of 9 channels, 64 codes), on top of
``configs/train_mesh_vqvae.py`` (the released recipe).

Run by ``make demo`` (``python -m hmr_jax.demo``; ``--quick`` passes ``:quick``), which makes the
data and fills in its paths; by hand, after its data step:

    python train.py --config configs/train_demo_tokenizer.py --workdir demo_out/tokenizer \\
        --config.data.train=demo_out/data/train \\
        --config.model.autoencoder.connection_folder=demo_out/data/train/topology

``configs/train_demo_tokenizer.py:quick``: a 20-step smoke run.
"""
import copy

import ml_collections

from configs import common, train_mesh_vqvae


def get_config(arg=None):
    """The demo tokenizer stage; ``arg="quick"`` for the smoke run."""
    quick = common.argument(arg, ("", "quick"), "configs/train_demo_tokenizer.py") == "quick"
    c = train_mesh_vqvae.get_config()
    m = copy.deepcopy(c.model.to_dict())
    m["autoencoder"] = dict(connection_folder="", initial_connection="pool0",
                            layers=["pool0", "pool1", "pool2", "pool3", "pool4",
                                    "unpool4", "unpool3", "unpool2", "unpool1", "unpool0"],
                            channels=[32, 32, 64, 64, 9, 64, 64, 32, 32, 3],
                            weight_nums=[9, 0, 9, 0, 9, 9, 0, 9, 0, 9],
                            residual_rates=[0, 1, 0, 1, 0, 0, 1, 0, 1, 0], connection_sha256=None)
    m["quantizer"].update(embedding_dim=9, num_embeddings=64)
    c.model = ml_collections.ConfigDict(m)
    c.codebook_init = "data"   # see MeshVQVAEStage: the random start collapses in short runs
    c.batch_size = 16
    c.total_steps = 400
    c.log_every_steps = 50
    c.eval_every_steps = 0
    c.checkpoint.every_steps = 200
    c.optim.base_lr = 3e-3   # the released 5e-5 is for 250k steps; the demo has a few hundred
    if quick:
        c.total_steps = 20
        c.log_every_steps = 10
    return c
