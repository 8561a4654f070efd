"""Released MEGA with the vit backbone (zenodo 14974141 ``checkpoint/CVQMAE/mega_vit``), for inference.

Convert the original checkpoint once:

    python convert_torch_weights.py checkpoint/CVQMAE/mega_vit --model mega_vit --out converted/mega_vit

and get meshes (``--num-samples 25``: 25 hypotheses per person; tokenizer, faces and
connection files from ``converted/mesh_vqvae_54`` and ``body_models/`` by default):

    python sample.py --checkpoint converted/mega_vit --images photo.jpg --out out/

The converted folder's ``config.json`` holds the same ``mega`` / ``backbone`` entries as this
file (``hmr_jax.models.mega.build_mega(config)`` builds the model). ``decoding`` holds MEGA's
evaluation settings: deterministic (all masked, one pass) or stochastic (``steps`` iterations,
initial Gumbel temperature ``gen_temp``, ``num_samples`` hypotheses per image);
``faithful=True`` reproduces the original code's quirks (see ``hmr_jax.models.decoding``).
Images: 256 x 192 crops, RGB normalised with the ImageNet mean / std.

The original ``config_vit.yaml`` says ``cond_length: 196`` but the ViT yields 16 x 12 = 192
condition tokens (256 x 192 input): faithful mode refuses it (the original would slice off
mesh tokens); the default slices with the real count.
"""
import ml_collections


def get_config():
    """ConfigDict: model (kind), mega (CVQMAE sizes), backbone, image_size, decoding."""
    c = ml_collections.ConfigDict()
    c.model = "mega_vit"
    c.mega = dict(seq_length=54, emb_dim=1024, encoder_layer=12, encoder_head=4, decoder_layer=4,
                  decoder_head=4, num_embeddings=512, dim_tokens=512, cond_length=196, cond_dim=1280,
                  cond_dropout=0.0)
    c.backbone = dict(backbone="vit", embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0, qkv_bias=True,
                      drop_path_rate=0.55, patch_size=16, patch_padding=2, pos_grid=(16, 12),
                      interpolate_pos_embed=False, input_size=(256, 192))
    c.image_size = (256, 192)
    c.decoding = dict(mode="stochastic", steps=5, gen_temp=1.0, num_samples=25, faithful=False)
    return c
