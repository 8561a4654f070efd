"""Released MEGA with the resnet backbone (zenodo 14974141 ``checkpoint/CVQMAE/mega_resnet``), for inference.

    python convert_torch_weights.py checkpoint/CVQMAE/mega_resnet --model mega_resnet --out converted/mega_resnet
    python sample.py --checkpoint converted/mega_resnet --images photo.jpg --out out/ --num-samples 25

ResNet-50 (no pooling) on 224 x 224 crops: 7 x 7 condition tokens of 2048 channels.
``mega`` / ``backbone`` / ``image_size``: the model (``hmr_jax.models.mega.build_mega``), as the
converted folder's ``config.json`` holds it; ``decoding``: see ``configs/__init__.py``.
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
