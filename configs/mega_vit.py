"""Released MEGA with the vit backbone (zenodo 14974141 ``checkpoint/CVQMAE/mega_vit``), for inference.

    python convert_torch_weights.py checkpoint/CVQMAE/mega_vit --model mega_vit --out converted/mega_vit
    python sample.py --checkpoint converted/mega_vit --images photo.jpg --out out/ --num-samples 25

ViT-H/16 on 256 x 192 crops: 16 x 12 = 192 condition tokens of 1280 channels. The original
``config_vit.yaml`` says ``cond_length: 196``: faithful mode refuses it (the original would slice
off mesh tokens); the default slices with the real count.
``mega`` / ``backbone`` / ``image_size``: the model (``hmr_jax.models.mega.build_mega``), as the
converted folder's ``config.json`` holds it; ``decoding``: see ``configs/__init__.py``.
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
