"""Released VQ-HPS with two hrnet backbones (zenodo 12651812 ``checkpoint/MESH_REGRESSOR/vqhps_hrnet``).

Convert once:

    python convert_torch_weights.py checkpoint/MESH_REGRESSOR/vqhps_hrnet --model vqhps_hrnet --out converted/vqhps_hrnet

and get meshes (H36M joint regressor and template from ``body_models/`` by default):

    python sample.py --checkpoint converted/vqhps_hrnet --images photo.jpg --out out/

``hmr_jax.models.vqhps.build_vqhps(config)`` builds the regressor (the converted folder's
``config.json`` has the same ``vqhps`` / ``backbone`` entries). It predicts in one pass from
224 x 224 ImageNet-normalised crops and a 51-number pose initialisation: the 17 H36M joints
(``body_models/J_regressor_h36m.npy``) of the T-pose (``hmr_jax.models.vqhps.pose_from_mesh``).
``decoding.faithful=True`` reproduces the original's batch-coupled token head
(see ``hmr_jax.models.vqhps``).
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
