"""Flax (linen) models: the mesh tokenizer (Mesh-VQ-VAE) and, later, backbones and heads."""
