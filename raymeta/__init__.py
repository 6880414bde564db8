"""raymeta: meta-learning that learns from the tasks it has already seen, on Ray.

Public API (imported lazily, so ``import raymeta.gp`` never pulls in Ray):

- :class:`ScaMLGPSearch` - a Ray Tune searcher warm-started from earlier runs.
- :class:`ResultStore` - the Arrow/Parquet store every run writes to.
- :mod:`raymeta.gp`, :mod:`raymeta.metalearn`, :mod:`raymeta.tasks` - the numerical
  cores (no Ray); :mod:`raymeta.search`, :mod:`raymeta.training`,
  :mod:`raymeta.results` - the Ray adapters.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ResultStore": "raymeta.results",
    "ScaMLGPSearch": "raymeta.search",
    "StoreCallback": "raymeta.search",
    "load_config": "raymeta.config",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    """Import public names on first use (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raymeta' has no attribute {name!r}")
