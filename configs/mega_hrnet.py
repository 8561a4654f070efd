"""Released MEGA with the hrnet backbone (zenodo 14974141 ``checkpoint/CVQMAE/mega_hrnet``), for inference.

    python convert_torch_weights.py checkpoint/CVQMAE/mega_hrnet --model mega_hrnet --out converted/mega_hrnet
    python sample.py --checkpoint converted/mega_hrnet --images photo.jpg --out out/ --num-samples 25

HRNet-W48 on 224 x 224 crops: 7 x 7 condition tokens of 720 channels.
``mega`` / ``backbone`` / ``image_size``: the model (``hmr_jax.models.mega.build_mega``), as the
converted folder's ``config.json`` holds it; ``decoding``: see ``configs/__init__.py``.
"""
import ml_collections


def get_config():
    """ConfigDict: model (kind), mega (CVQMAE sizes), backbone, image_size, decoding."""
    c = ml_collections.ConfigDict()
    c.model = "mega_hrnet"
    c.mega = dict(seq_length=54, emb_dim=1024, encoder_layer=12, encoder_head=4, decoder_layer=4,
                  decoder_head=4, num_embeddings=512, dim_tokens=512, cond_length=49, cond_dim=720,
                  cond_dropout=0.0)
    c.backbone = dict(backbone="hrnet", width=48, head="downsample_conv")
    c.image_size = (224, 224)
    c.decoding = dict(mode="stochastic", steps=5, gen_temp=1.0, num_samples=25, faithful=False)
    return c
