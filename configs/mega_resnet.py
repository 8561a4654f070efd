"""Released MEGA with the resnet backbone (zenodo 14974141 ``checkpoint/CVQMAE/mega_resnet``), for inference.

Convert the original checkpoint once:

    python convert_torch_weights.py checkpoint/CVQMAE/mega_resnet --model mega_resnet --out converted/mega_resnet

and get meshes (``--num-samples 25``: 25 hypotheses per person; tokenizer, faces and
connection files from ``converted/mesh_vqvae_54`` and ``body_models/`` by default):

    python sample.py --checkpoint converted/mega_resnet --images photo.jpg --out out/

The converted folder's ``config.json`` holds the same ``mega`` / ``backbone`` entries as this
file (``hmr_jax.models.mega.build_mega(config)`` builds the model). ``decoding`` holds MEGA's
evaluation settings: deterministic (all masked, one pass) or stochastic (``steps`` iterations,
initial Gumbel temperature ``gen_temp``, ``num_samples`` hypotheses per image);
``faithful=True`` reproduces the original code's quirks (see ``hmr_jax.models.decoding``).
Images: 224 x 224 crops, RGB normalised with the ImageNet mean / std.
"""
import ml_collections


def get_config():
    """ConfigDict: model (kind), mega (CVQMAE sizes), backbone, image_size, decoding."""
    c = ml_collections.ConfigDict()
    c.model = "mega_resnet"
    c.mega = dict(seq_length=54, emb_dim=1024, encoder_layer=12, encoder_head=4, decoder_layer=4,
                  decoder_head=4, num_embeddings=512, dim_tokens=512, cond_length=49, cond_dim=2048,
                  cond_dropout=0.0)
    c.backbone = dict(backbone="resnet50", layers=(3, 4, 6, 3), global_pool=False)
    c.image_size = (224, 224)
    c.decoding = dict(mode="stochastic", steps=5, gen_temp=1.0, num_samples=25, faithful=False)
    return c
