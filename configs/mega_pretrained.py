"""Released MEGA pre-trained on meshes (VQMAE, zenodo 14974141 ``checkpoint/VQMAE/mega_pretrained``).

Unconditional: generates token sequences (random plausible bodies) and initialises MEGA
training. Convert once:

    python convert_torch_weights.py checkpoint/VQMAE/mega_pretrained --model mega_pretrained \\
        --out converted/mega_pretrained

``hmr_jax.models.mega.build_mega(config)`` builds the VQMAE; ``decoding`` holds the original
``VQMAE.generate`` defaults (5 steps, temperature 4.5 with its (1 - r) (t (1 - r))^5 annealing).
"""
import ml_collections


def get_config():
    """ConfigDict: model (kind), mega (VQMAE sizes), decoding."""
    c = ml_collections.ConfigDict()
    c.model = "mega_pretrained"
    c.mega = dict(seq_length=54, emb_dim=1024, encoder_layer=12, encoder_head=4, decoder_layer=4,
                  decoder_head=4, num_embeddings=512, dim_tokens=512)
    c.decoding = dict(mode="stochastic", steps=5, gen_temp=4.5, num_samples=1, faithful=False)
    return c
