"""Model configs as plain nested dicts (the modules accept a mapping or an ``ml_collections.ConfigDict``)."""
from __future__ import annotations

from typing import Any, Mapping


def config_to_dict(config: Any) -> Any:
    """A plain nested dict (lists, no ConfigDict) from a mapping or ConfigDict; other values as they are."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if isinstance(config, Mapping):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    return config
