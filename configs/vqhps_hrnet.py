"""Released VQ-HPS with hrnet backbones (zenodo 12651812 ``checkpoint/MESH_REGRESSOR/vqhps_hrnet``).

    python convert_torch_weights.py checkpoint/MESH_REGRESSOR/vqhps_hrnet --model vqhps_hrnet \\
        --out converted/vqhps_hrnet
    python sample.py --checkpoint converted/vqhps_hrnet --images photo.jpg --out out/

One pass of two HRNet-W48 (pose and rotation branches) and the token transformer on 224 x 224
crops; ``vqhps`` / ``backbone`` / ``image_size``: the model (``hmr_jax.models.vqhps.build_vqhps``),
as the converted folder's ``config.json`` holds it; ``decoding``: see ``configs/__init__.py``.
"""
import ml_collections


def get_config():
    """ConfigDict: model (kind), vqhps (regressor sizes), backbone, image_size, decoding."""
    c = ml_collections.ConfigDict()
    c.model = "vqhps_hrnet"
    c.vqhps = dict(model_dim=512, num_heads=8, feedforward_dim=1024, num_enc_layers=1, num_dec_layers=1,
                   dict_size=512, num_tokens=54, dropout=0.2, autoreg=True, seq_len=49, pose_dim=51)
    c.backbone = dict(backbone="hrnet", width=48, head="downsample_conv")
    c.image_size = (224, 224)
    c.decoding = dict(mode="single_pass", faithful=False)
    return c
