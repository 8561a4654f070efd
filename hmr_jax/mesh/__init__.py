"""Mesh topology: connection matrices (graph pooling / unpooling hierarchies), templates.

``connections`` reads and validates the original "connection matrix" files; ``io``, ``build``
and ``spiral`` (templates, the hierarchy generator, spiral neighbourhoods) live beside it.
"""
