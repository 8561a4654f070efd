"""Released VQ-HPS with resnet backbones (zenodo 12651812 ``checkpoint/MESH_REGRESSOR/vqhps_resnet``).

    python convert_torch_weights.py checkpoint/MESH_REGRESSOR/vqhps_resnet --model vqhps_resnet \\
        --out converted/vqhps_resnet
    python sample.py --checkpoint converted/vqhps_resnet --images photo.jpg --out out/

One pass of two ResNet-50 (pose and rotation branches) and the token transformer on 224 x 224
crops; ``vqhps`` / ``backbone`` / ``image_size``: the model (``hmr_jax.models.vqhps.build_vqhps``),
as the converted folder's ``config.json`` holds it; ``decoding``: see ``configs/__init__.py``.
"""
import ml_collections


def get_config():
    """ConfigDict: model (kind), vqhps (regressor sizes), backbone, image_size, decoding."""
    c = ml_collections.ConfigDict()
    c.model = "vqhps_resnet"
    c.vqhps = dict(model_dim=512, num_heads=8, feedforward_dim=1024, num_enc_layers=1, num_dec_layers=1,
                   dict_size=512, num_tokens=54, dropout=0.2, autoreg=True, seq_len=49, pose_dim=51)
    c.backbone = dict(backbone="resnet50", layers=(3, 4, 6, 3), global_pool=False)
    c.image_size = (224, 224)
    c.decoding = dict(mode="single_pass", faithful=False)
    return c
