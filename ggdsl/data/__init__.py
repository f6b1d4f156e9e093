"""Data sources, datasets and minibatches for ggdsl.

Importing this package is light: it imports no numerical library; every name below is
loaded from its submodule on first use.

- :func:`load_dataset` (``ggdsl.data.sources``): one split of a source as a :class:`Dataset`.
- :func:`check_source_options`, :func:`resolve_options`, :func:`source_names`,
  :func:`source_keys`, :func:`register_source`, :class:`Key` (``ggdsl.data.registry``):
  the sources and their keys, checked without opening files.
- :class:`Batches`, :func:`prefetch` (``ggdsl.data.batches``): reproducible, resumable
  minibatches keyed by model variable.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "COMMON_KEYS": "registry",
    "Key": "registry",
    "SourceInfo": "registry",
    "check_source_options": "registry",
    "get_source": "registry",
    "register_source": "registry",
    "resolve_options": "registry",
    "source_keys": "registry",
    "source_names": "registry",
    "Dataset": "dataset",
    "PIXEL_FEATURES": "dataset",
    "load_dataset": "sources",
    "OFFLINE_SOURCES": "sources",
    "read_idx": "idx",
    "write_idx": "idx",
    "LABELS_KEY": "batches",
    "Batches": "batches",
    "Prefetcher": "batches",
    "prefetch": "batches",
}

__all__ = [
    "Batches",
    "COMMON_KEYS",
    "Dataset",
    "Key",
    "LABELS_KEY",
    "OFFLINE_SOURCES",
    "PIXEL_FEATURES",
    "Prefetcher",
    "SourceInfo",
    "check_source_options",
    "get_source",
    "load_dataset",
    "prefetch",
    "read_idx",
    "register_source",
    "resolve_options",
    "source_keys",
    "source_names",
    "write_idx",
]

if TYPE_CHECKING:
    from ggdsl.data.batches import LABELS_KEY, Batches, Prefetcher, prefetch
    from ggdsl.data.dataset import PIXEL_FEATURES, Dataset
    from ggdsl.data.idx import read_idx, write_idx
    from ggdsl.data.registry import (
        COMMON_KEYS,
        Key,
        SourceInfo,
        check_source_options,
        get_source,
        register_source,
        resolve_options,
        source_keys,
        source_names,
    )
    from ggdsl.data.sources import OFFLINE_SOURCES, load_dataset


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ggdsl.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ggdsl.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
