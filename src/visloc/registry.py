"""A tiny typed registry of pluggable components configured by frozen dataclasses.

Each plug-in registers a *config class* (a frozen dataclass) and a *factory* under a name::

    extractors = Registry("extractor")

    @dataclass(frozen=True)
    class SIFTConfig:
        max_keypoints: int = 4096

    @extractors.register("sift", SIFTConfig)
    class SIFT: ...

    sift = extractors.create("sift", max_keypoints=2048)

Unknown names and unknown config keys raise :class:`~visloc.errors.ConfigError`; presets are never
mutated (``dataclasses.replace`` makes the override copy).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    config_cls: type
    factory: Callable[[Any], T]


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits a config field annotation (plain types, ``X | None``, generics)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is tuple:  # a JSON round trip or the command line gives a list
        return isinstance(value, (tuple, list))
    if origin is not None:
        return isinstance(value, origin)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def check_config_values(config_cls: type, values: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a value whose type does not fit its field."""
    hints = typing.get_type_hints(config_cls)
    for key, value in values.items():
        if key in hints and not _accepts(hints[key], value):
            raise ConfigError(f"{config_cls.__name__}.{key} expects {hints[key]}, got {value!r}")


class Registry(Generic[T]):
    """Name -> (config dataclass, factory) mapping for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config_cls: type) -> Callable[[Callable[[Any], T]], Callable[[Any], T]]:
        if not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"{config_cls!r} must be a dataclass")

        def decorator(factory: Callable[[Any], T]) -> Callable[[Any], T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, config_cls, factory)
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def config(self, name: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """Build the config of ``name`` with ``overrides`` applied (unknown keys are errors)."""
        entry = self.entry(name)
        overrides = dict(overrides or {})
        fields = {f.name for f in dataclasses.fields(entry.config_cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for {self.kind} {name!r}; known: {sorted(fields)}"
            )
        check_config_values(entry.config_cls, overrides)
        return entry.config_cls(**overrides)

    def create(self, name: str, config: Any = None, **overrides: Any) -> T:
        """Instantiate component ``name`` from ``config`` (or its defaults) plus ``overrides``."""
        entry = self.entry(name)
        if config is None:
            config = self.config(name, overrides)
        else:
            if not isinstance(config, entry.config_cls):
                raise ConfigError(f"{self.kind} {name!r} expects {entry.config_cls.__name__}")
            if overrides:
                self.config(name, overrides)  # validate keys
                config = dataclasses.replace(config, **overrides)
        return entry.factory(config)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-friendly dict of a (possibly nested) config dataclass."""
    return dataclasses.asdict(config)
