"""The registry of data sources and the options each one takes.

Every source declares its keys (type, default, whether required) when it is registered, so
a spec's ``data:`` section can be checked WITHOUT opening any file and without importing
numerical libraries: this module imports only the standard library, and the built-in
sources (in :mod:`ggdsl.data.sources`, which imports only numpy at import time) are
registered the first time the registry is queried.

A user adds a source with the decorator::

    from ggdsl.data.registry import Key, register_source

    @register_source("my_source", keys={"path": Key("path", required=True)})
    def load_my_source(options, split):
        # options: every key resolved (defaults filled in); split: "train" or "test"
        return {"image": images_uint8_or_unit_float, "label": labels}

A loader returns a ``dict`` of numpy arrays (see :func:`ggdsl.data.sources.load_dataset`
for what it does with them) or a :class:`ggdsl.data.dataset.Dataset`.
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ggdsl.errors import DataError

__all__ = [
    "COMMON_KEYS",
    "Key",
    "SourceInfo",
    "check_source_options",
    "get_source",
    "register_source",
    "resolve_options",
    "source_keys",
    "source_names",
]

#: The key kinds a :class:`Key` may declare.
KINDS = ("int", "float", "str", "bool", "choice", "mapping", "size", "range", "path")

#: Pixel ranges a source can scale images to.
RANGES = ((0.0, 1.0), (-1.0, 1.0))


@dataclass(frozen=True)
class Key:
    """One option a data source accepts.

    Attributes:
        kind: How the value is checked: ``int``, ``float`` (ints accepted), ``str``,
            ``bool``, ``choice`` (one of ``choices``), ``mapping`` (str -> str, e.g.
            ``observe``), ``size`` (``[height, width]`` of positive ints), ``range``
            (``[0, 1]`` or ``[-1, 1]``), ``path`` (a string, or a list of strings).
        default: Value used when the key is absent (``None`` = not set).
        required: Whether the key must be given.
        choices: Allowed values for ``choice``.
        minimum: Smallest allowed value for ``int`` and ``float``.
        doc: One line for documentation and ``ggdsl explain``.
    """

    kind: str
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown key kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.kind == "choice" and not self.choices:
            raise ValueError("a 'choice' key needs choices")

    def check(self, value: Any) -> list[tuple[str, str]]:
        """Checks a value against this key.

        Args:
            value: The value from the spec.

        Returns:
            ``(sub_path, message)`` problems; ``sub_path`` is ``""`` for the value itself
            or ``".name"`` / ``"[i]"`` for a part of it.
        """
        return _CHECKS[self.kind](self, value)

    def normalise(self, value: Any) -> Any:
        """Returns a checked value in canonical form (tuples, floats, plain dicts)."""
        if value is None:
            return None
        if self.kind == "float":
            return float(value)
        if self.kind == "int":
            return int(value)
        if self.kind == "size":
            return tuple(int(v) for v in value)
        if self.kind == "range":
            return tuple(float(v) for v in value)
        if self.kind == "mapping":
            return dict(value)
        if self.kind == "path" and not isinstance(value, str):
            return tuple(str(v) for v in value)
        return value


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_minimum(key: Key, value: Any) -> list[tuple[str, str]]:
    if key.minimum is not None and value < key.minimum:
        return [("", f"must be >= {key.minimum:g}, got {value!r}")]
    return []


def _check_int(key: Key, value: Any) -> list[tuple[str, str]]:
    if not _is_int(value):
        return [("", f"expected an integer, got {_describe(value)}")]
    return _check_minimum(key, value)


def _check_float(key: Key, value: Any) -> list[tuple[str, str]]:
    if not _is_number(value) or not math.isfinite(float(value)):
        return [("", f"expected a number, got {_describe(value)}")]
    return _check_minimum(key, value)


def _check_str(key: Key, value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, str) or not value:
        return [("", f"expected a non-empty string, got {_describe(value)}")]
    return []


def _check_bool(key: Key, value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, bool):
        return [("", f"expected true or false, got {_describe(value)}")]
    return []


def _check_choice(key: Key, value: Any) -> list[tuple[str, str]]:
    assert key.choices is not None
    if isinstance(value, bool) or value not in key.choices:
        known = ", ".join(str(c) for c in key.choices)
        return [("", f"expected one of {known}, got {value!r}")]
    return []


def _check_mapping(key: Key, value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, Mapping):
        return [("", f"expected a mapping (variable: feature), got {_describe(value)}")]
    problems = []
    for name, feature in value.items():
        if not isinstance(name, str) or not name:
            problems.append(("", f"keys must be non-empty strings, got {_describe(name)}"))
        elif not isinstance(feature, str) or not feature:
            problems.append((f".{name}", f"expected a feature name, got {_describe(feature)}"))
    return problems


def _check_size(key: Key, value: Any) -> list[tuple[str, str]]:
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(_is_int(v) and v > 0 for v in value)
    ):
        return [("", f"expected [height, width] (two positive integers), got {value!r}")]
    return []


def _check_range(key: Key, value: Any) -> list[tuple[str, str]]:
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(_is_number(v) for v in value)
        and tuple(float(v) for v in value) in RANGES
    ):
        return []
    return [("", f"expected [0, 1] or [-1, 1], got {value!r}")]


def _check_path(key: Key, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, str) and value:
        return []
    if isinstance(value, list | tuple) and value:
        return [
            (f"[{i}]", f"expected a path string, got {_describe(v)}")
            for i, v in enumerate(value)
            if not isinstance(v, str) or not v
        ]
    return [("", f"expected a path (a string, or a list of strings), got {_describe(value)}")]


_CHECKS: dict[str, Callable[[Key, Any], list[tuple[str, str]]]] = {
    "int": _check_int,
    "float": _check_float,
    "str": _check_str,
    "bool": _check_bool,
    "choice": _check_choice,
    "mapping": _check_mapping,
    "size": _check_size,
    "range": _check_range,
    "path": _check_path,
}

#: Keys every source takes (a source may override one, e.g. to change its default).
COMMON_KEYS: dict[str, Key] = {
    "seed": Key("int", 0, doc="seeds generated sources and is the default shuffling seed"),
    "split": Key("choice", "train", choices=("train", "test"), doc="split used for training"),
    "observe": Key("mapping", None, doc="model variable <- dataset feature"),
    "range": Key("range", (0.0, 1.0), doc="pixel range of image/video features"),
    "resize": Key("size", None, doc="[height, width] images are resized to"),
    "labels": Key("str", None, doc="feature used only by evaluation (e.g. label)"),
}

#: Keys of the ``data:`` section that are not source options and are skipped by the checks.
IGNORED_KEYS = frozenset({"source"})


@dataclass(frozen=True)
class SourceInfo:
    """A registered source: its name, keys (common ones included) and loader."""

    name: str
    keys: Mapping[str, Key]
    loader: Callable[[Mapping[str, Any], str], Any]
    doc: str = ""


_SOURCES: dict[str, SourceInfo] = {}
_BUILTINS = "ggdsl.data.sources"
_builtins_loaded = False


def register_source(
    name: str, *, keys: Mapping[str, Key] | None = None
) -> Callable[[Callable[[Mapping[str, Any], str], Any]], Callable[[Mapping[str, Any], str], Any]]:
    """Registers a data source; use as a decorator on its loader.

    Args:
        name: The value of ``data.source`` that selects it.
        keys: Its own keys; the common keys (:data:`COMMON_KEYS`) are added, and a key
            given here with a common name replaces the common one.

    Returns:
        A decorator that registers the loader ``(options, split) -> dict | Dataset`` and
        returns it unchanged.

    Raises:
        ValueError: If the name is already registered.
    """
    own = dict(keys or {})

    def decorate(
        loader: Callable[[Mapping[str, Any], str], Any],
    ) -> Callable[[Mapping[str, Any], str], Any]:
        if name in _SOURCES:
            raise ValueError(f"data source {name!r} is already registered")
        for key_name, key in own.items():
            if not isinstance(key, Key):
                raise TypeError(f"key {key_name!r} of source {name!r} must be a Key")
        doc = (loader.__doc__ or "").strip().splitlines()
        _SOURCES[name] = SourceInfo(
            name=name,
            keys={**COMMON_KEYS, **own},
            loader=loader,
            doc=doc[0] if doc else "",
        )
        return loader

    return decorate


def _ensure_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module(_BUILTINS)


def source_names() -> tuple[str, ...]:
    """Returns the registered source names, sorted."""
    _ensure_builtins()
    return tuple(sorted(_SOURCES))


def get_source(source: str) -> SourceInfo:
    """Returns a registered source.

    Raises:
        DataError: If no source has that name (the message lists the known ones).
    """
    _ensure_builtins()
    if source not in _SOURCES:
        raise DataError(_unknown_source(source))
    return _SOURCES[source]


def source_keys(source: str) -> Mapping[str, Key]:
    """Returns every key a source takes (common ones included), by name."""
    return get_source(source).keys


def _unknown_source(source: Any) -> str:
    return f"unknown data source {source!r} (known: {', '.join(sorted(_SOURCES))})"


def check_source_options(source: str, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Checks a ``data:`` section without opening any file.

    Args:
        source: The source name (``data.source``).
        options: The other keys of the section; a ``source`` entry is ignored, so the whole
            section can be passed.

    Returns:
        ``(key, message)`` problems, in the order of ``options`` then missing required
        keys. ``key`` is a dotted path relative to ``data`` (``"source"``, ``"resize"``,
        ``"observe.x"``, ``"path[1]"``). Empty when the section is valid.
    """
    _ensure_builtins()
    if not isinstance(source, str) or source not in _SOURCES:
        return [("source", _unknown_source(source))]
    if not isinstance(options, Mapping):
        return [("", f"expected a mapping of options, got {_describe(options)}")]
    keys = _SOURCES[source].keys
    problems: list[tuple[str, str]] = []
    for name, value in options.items():
        if name in IGNORED_KEYS:
            continue
        key = keys.get(name) if isinstance(name, str) else None
        if key is None:
            known = ", ".join(sorted(keys))
            problems.append((str(name), f"unknown key for source {source!r} (known: {known})"))
            continue
        if value is None and not key.required:
            continue
        problems.extend((f"{name}{sub}", message) for sub, message in key.check(value))
    for name, key in keys.items():
        if key.required and options.get(name) is None:
            problems.append((name, f"source {source!r} requires the key {name!r}"))
    return problems


def resolve_options(source: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Checks options and fills in defaults.

    Args:
        source: The source name.
        options: The ``data:`` section (a ``source`` entry is dropped).

    Returns:
        A dict with every key of the source, in canonical form (tuples for ``range`` and
        ``resize``, a dict for ``observe``, ``None`` where unset).

    Raises:
        DataError: Listing every problem :func:`check_source_options` finds.
    """
    problems = check_source_options(source, options)
    if problems:
        lines = [f"data.{key}: {msg}" if key else f"data: {msg}" for key, msg in problems]
        raise DataError("\n".join(lines))
    keys = _SOURCES[source].keys
    resolved = {}
    for name, key in keys.items():
        value = options.get(name)
        resolved[name] = key.normalise(key.default if value is None else value)
    return resolved
