"""The embedded demo's MEGA: a small CVQMAE on a reduced ResNet (one bottleneck per stage),
trained on the toy image set with the demo tokenizer (``configs/train_demo_tokenizer.py``).

Run by ``make demo`` (``python -m hmr_jax.demo``), which fills in the paths.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import train_mega_resnet  # noqa: E402


def get_config():
    c = train_mega_resnet.get_config()
    c.mega.update(seq_length=8, emb_dim=128, encoder_layer=2, encoder_head=4, decoder_layer=2,
                  decoder_head=4, num_embeddings=32, dim_tokens=32, cond_length=9)
    c.backbone.model.layers = (1, 1, 1, 1)
    c.data.crop_size = 96        # 96 x 96 crops -> 3 x 3 condition tokens (the CPU budget)
    c.num_vertices = 24
    c.batch_size = 16
    c.total_steps = 400
    c.log_every_steps = 25
    c.checkpoint.every_steps = 200
    c.optim.update(base_lr=0.05, warmup_epochs=1.0, total_epochs=14.0)   # peak 3e-3 at batch 16
    c.tokenizer.path = ""
    c.init = dict(mega="", backbone="")
    return c
