"""Conversion of the original PyTorch checkpoints into Flax variables and Orbax checkpoints.

This is the only package that knows PyTorch key names. One job per module:

* ``common``: reading torch containers, key bookkeeping (``StateDict``), layout transposes, the
  small key mappers (``dense``, ``layer_norm``, ``count_blocks``), the user-config normaliser
  (``user_config``) and the converted folders on disk;
* ``backbones``, ``mesh_vqvae``, ``mega``, ``vqhps``: the key mapping of each model family
  (``backbones.backbone_kind`` is the one backbone detector);
* ``fixtures``: ``--verify``, running a converted model on a parity fixture and comparing;
* ``registry``: the table of checkpoint kinds and ``convert_checkpoint``.
"""
