"""Command-line options derived from a frozen (nested) dataclass config.

:class:`ConfigOptions` walks a default config: every *leaf* field (one whose value is not itself a
dataclass) becomes one option, named after the field (``loop.epochs`` -> ``--epochs``). A leaf name that
two fields share is prefixed with its parent field (``pairs.seed`` -> ``--pairs-seed``); ``names`` renames
the others (``model.backbone.name`` -> ``--backbone``). The option's help is the field's entry in its
class's ``Attributes:`` docstring, its type the field's annotation and its default the default config's
value, so a new config field is a new option without another line of code.

Spellings on the command line (and in ``--set``):

=====================  =================================  ======================================
annotation             example                            note
=====================  =================================  ======================================
``int/float/str``      ``--epochs 30``
``bool``               ``--amp`` / ``--no-amp``           ``--set``: true/false, yes/no, 1/0
``X | None``           ``--val-split none``               ``none`` (or nothing) is ``None``
``tuple[int, ...]``    ``--milestones 20,30``             ``''`` is the empty tuple
``tuple[int, int]``    ``--pool-grid 2x2``                ``(rows, cols)``
``tuple[str, ...]``    ``--exclude-scene a --exclude-scene b``  repeat; ``--set``: comma-separated
=====================  =================================  ======================================

``--set KEY=VALUE`` (repeatable) sets a field by its dotted path (``--set loop.epochs=5``) after the other
options; an unknown key is a usage error (exit code 2) that lists the valid keys.

This module imports neither torch nor any config: it is generic.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
import re
import types
import typing
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Optional, TypeVar

import typer

from ..errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

_NONE = ("", "none")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_SET_PARAMETER = "set_"


# --- field types ----------------------------------------------------------------------------------------
def _optional_inner(annotation: Any) -> Any | None:
    """``X`` of ``X | None``; ``None`` for any other annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(rest) == 1:
            return rest[0]
    return None


def _kind(annotation: Any) -> str:
    """``bool``, ``int``, ``float``, ``str``, ``ints`` (``tuple[int, ...]``), ``grid`` (``tuple[int, int]``),
    ``strs`` (``tuple[str, ...]``) or ``optional`` (``X | None`` of an int, float, str, ints or grid).

    Raises:
        TypeError: a type without a command-line spelling.
    """
    inner = _optional_inner(annotation)
    if inner is not None:
        if _kind(inner) in ("int", "float", "str", "ints", "grid"):
            return "optional"
    elif annotation in (bool, int, float, str):
        return annotation.__name__
    elif typing.get_origin(annotation) is tuple:
        kinds = {(int, ...): "ints", (int, int): "grid", (str, ...): "strs"}
        if typing.get_args(annotation) in kinds:
            return kinds[typing.get_args(annotation)]
    raise TypeError(f"no command-line spelling for fields of type {annotation!r}")


def parse_value(annotation: Any, text: str) -> Any:
    """The value that ``text`` spells for a field of type ``annotation`` (see the module docstring).

    Raises:
        ValueError: ``text`` does not spell such a value (the message says what was expected).
    """
    kind = _kind(annotation)
    if kind == "optional":
        return None if text.strip().lower() in _NONE else parse_value(_optional_inner(annotation), text)
    if kind == "str":
        return text
    text = text.strip()
    if kind == "bool":
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"expected true or false, got {text!r}")
    if kind == "strs":
        return tuple(v.strip() for v in text.split(",") if v.strip())
    try:
        if kind in ("int", "float"):
            return annotation(text)
        if kind == "ints":
            return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
        rows, cols = (int(v) for v in text.lower().split("x"))
        return rows, cols
    except ValueError:
        expected = {"int": "an integer", "float": "a number", "ints": "comma-separated integers such as 20,30",
                    "grid": "ROWSxCOLS such as 2x2"}[kind]
        raise ValueError(f"expected {expected}, got {text!r}") from None


def format_value(annotation: Any, value: Any) -> str:
    """The command-line spelling of ``value`` (the inverse of :func:`parse_value`)."""
    kind = _kind(annotation)
    if value is None:
        return "none"
    if kind == "optional":
        return format_value(_optional_inner(annotation), value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "grid":
        return "x".join(str(v) for v in value)
    if kind in ("ints", "strs"):
        return ",".join(str(v) for v in value)
    return str(value)


_HINTS = {
    "optional": " ('none' for None)",
    "ints": " (comma-separated, e.g. 20,30; '' for none)",
    "grid": " (ROWSxCOLS, e.g. 2x2)",
    "strs": " (repeat the option for several)",
}


# --- help texts -----------------------------------------------------------------------------------------
def _plain_text(text: str) -> str:
    """Docstring markup as plain text: ``x`` -> x, :func:`~a.b` -> b, :class:`a.B` -> a.B."""

    def role(m: re.Match[str]) -> str:
        target = m[2].split("<")[0].strip() if "<" in m[2] else m[2]
        return target.rsplit(".", 1)[-1] if m[1] else target

    text = re.sub(r":[\w:]+:`(~?)([^`]+)`", role, text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    return " ".join(text.split())


def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> its entry in the ``Attributes:`` section of ``cls``'s docstring (as plain text)."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if start is None:
        return {}
    docs: dict[str, str] = {}
    indent, current = None, None
    for line in lines[start + 1 :]:
        if not line.strip():
            if docs:
                break
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        entry = re.match(r"(\w+)(?: \([^)]*\))?: (.*)", line.strip())
        if depth == indent and entry:
            current = entry[1]
            docs[current] = entry[2]
        elif depth > indent and current is not None:
            docs[current] += " " + line.strip()
        else:
            break
    return {name: _plain_text(text) for name, text in docs.items()}


# --- options of a config --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ConfigOption:
    """One command-line option: a leaf field of a (nested) config.

    Attributes:
        path: dotted field path from the top config, e.g. ``loop.epochs``.
        name: option name with underscores (``pairs_seed`` is ``--pairs-seed``).
        annotation: the field's type.
        default: the field's value in the default config.
        help: the field's entry in its class's ``Attributes:`` docstring.
        off_name: ``bool`` fields: the name of the switch that sets ``False`` (default ``no_<name>``).
    """

    path: str
    name: str
    annotation: Any
    default: Any
    help: str
    off_name: str | None = None

    @property
    def flag(self) -> str:
        """``--pairs-seed``."""
        return "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> str:
        return _kind(self.annotation)


def _leaves(config: Any, prefix: str, exclude: frozenset[str]) -> Iterator[tuple[str, Any, Any, str]]:
    """``(path, annotation, value, help)`` of every leaf field of ``config``, depth first in field order."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    for f in dataclasses.fields(config):
        path = prefix + f.name
        value = getattr(config, f.name)
        if path in exclude:
            continue
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, path + ".", exclude)
            continue
        if f.name not in docs:
            raise ValueError(f"{cls.__name__}.{f.name} has no entry in the class's Attributes: docstring (the "
                             f"help of its command-line option)")
        yield path, hints[f.name], value, docs[f.name]


def _option_names(paths: list[str], renames: Mapping[str, str]) -> dict[str, str]:
    """Path -> option name: ``renames``, else the leaf name, prefixed with the parent field when another
    option has the same leaf name."""
    unknown = sorted(set(renames) - set(paths))
    if unknown:
        raise ValueError(f"renamed fields {unknown} are not options; options: {paths}")
    names = {p: renames[p].split("/")[0] for p in paths if p in renames}
    leaf = {p: p.rsplit(".", 1)[-1] for p in paths if p not in renames}
    taken = Counter(leaf.values()) + Counter(names.values())
    for path, name in leaf.items():
        parts = path.split(".")
        names[path] = f"{parts[-2]}_{name}" if taken[name] > 1 and len(parts) > 1 else name
    clashes = sorted(name for name, n in Counter(names.values()).items() if n > 1)
    if clashes:
        raise ValueError(f"several fields would be option(s) {clashes}: rename them")
    return names


def replace_paths(config: Any, values: Mapping[str, Any]) -> Any:
    """``config`` with the fields at the dotted paths of ``values`` replaced (all fields of one nested
    config at once, so that its checks see the final combination)."""
    own: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            own[head] = value
    for head, sub in nested.items():  # on top of a nested config given whole
        own[head] = replace_paths(own.get(head, getattr(config, head)), sub)
    return dataclasses.replace(config, **own) if own else config


class ConfigOptions:
    """The command-line options of a frozen dataclass config (see the module docstring).

    Args:
        default: the config whose values are the options' defaults.
        names: option names of fields (by dotted path) that differ from the field name, e.g.
            ``{"model.backbone.name": "backbone"}``; a ``bool`` field may also name its off switch:
            ``"random_crop/centre_crop"``.
        exclude: fields (dotted paths, a nested config counts as one) without an option.

    Raises:
        TypeError: a leaf field of a type without a command-line spelling.
        ValueError: a leaf field without a docstring entry, or two fields with one option name.
    """

    def __init__(self, default: Any, names: Mapping[str, str] | None = None, exclude: Collection[str] = ()) -> None:
        if not dataclasses.is_dataclass(default) or isinstance(default, type):
            raise TypeError(f"expected a dataclass instance, got {default!r}")
        names = dict(names or {})
        leaves = list(_leaves(default, "", frozenset(exclude)))
        chosen = _option_names([path for path, *_ in leaves], names)
        self.default = default
        self.options: tuple[ConfigOption, ...] = tuple(
            ConfigOption(path, chosen[path], annotation, value, text,
                         names[path].split("/")[1] if "/" in names.get(path, "") else None)
            for path, annotation, value, text in leaves
        )
        for option in self.options:
            kind = option.kind  # TypeError for a type without a command-line spelling
            if option.off_name is not None and kind != "bool":
                raise ValueError(f"{option.path}: only bool fields have an off switch")
        self._by_name = {o.name: o for o in self.options}
        self._by_path = {o.path: o for o in self.options}
        top = {f.name for f in dataclasses.fields(default)}
        shadowing = sorted(o.name for o in self.options if o.name in top and o.path != o.name)
        if shadowing:
            raise ValueError(f"option name(s) {shadowing} are also fields of {type(default).__name__}: rename them")

    @property
    def paths(self) -> list[str]:
        """The dotted paths of the fields with an option (the keys of ``--set``)."""
        return list(self._by_path)

    def option(self, name: str) -> ConfigOption:
        """The option ``name`` (underscores, e.g. ``pairs_seed``)."""
        return self._by_name[name]

    def replace(self, config: Any, **values: Any) -> Any:
        """``config`` with ``values`` by option name (``epochs=5`` sets ``loop.epochs``) or by top-level field
        (``loop=LoopConfig(...)``; options inside it apply on top): the Python spelling of a command line.
        The result is built in one step, so its checks see the final combination only.

        Raises:
            ConfigError: a key that is neither an option nor a field, or an invalid result.
        """
        fields = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(values) - set(self._by_name) - fields)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} of {type(config).__name__}; "
                              f"known: {sorted(set(self._by_name) | fields)}")
        return replace_paths(config, {self._by_name[k].path if k in self._by_name else k: v
                                      for k, v in values.items()})

    def assignment(self, text: str) -> tuple[str, Any]:
        """``"loop.epochs=5"`` -> ``("loop.epochs", 5)``.

        Raises:
            ValueError: no ``=``, an unknown key (the message lists the valid keys) or a bad value.
        """
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {text!r}")
        if key not in self._by_path:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(self.paths)}")
        try:
            return key, parse_value(self._by_path[key].annotation, value)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None

    # --- typer -----------------------------------------------------------------------------------------
    def command(self, app: typer.Typer, name: str) -> Callable[[F], F]:
        """Register ``f(config, **others)`` as command ``name`` of ``app``.

        The command has ``f``'s own (typer-annotated) parameters, one option per config leaf and ``--set``;
        ``f`` receives the config built from them: the default config, the options, then the ``--set``
        assignments. ``f`` is returned unchanged.
        """

        def decorator(f: F) -> F:
            own = list(inspect.signature(f, eval_str=True).parameters.values())
            if not own or own[0].name != "config":
                raise TypeError(f"{f.__name__}: the first parameter must be `config`")
            own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[1:]]
            by_parameter = {(o.name + "_" if keyword.iskeyword(o.name) else o.name): o for o in self.options}
            clash = sorted({p.name for p in own} & (set(by_parameter) | {_SET_PARAMETER}))
            if clash:
                raise TypeError(f"{f.__name__}: parameter(s) {clash} are also config options")
            derived = [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, default=_typer_option(o),
                                         annotation=_typer_type(o)) for p, o in by_parameter.items()]
            assignments = inspect.Parameter(
                _SET_PARAMETER, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]],  # noqa: UP045
                default=typer.Option(None, "--set", metavar="KEY=VALUE", help=(
                    "Set a config field by its dotted path, e.g. loop.epochs=5 (repeatable; applied after the "
                    "other options; an unknown key lists the valid ones).")))
            required = [p for p in own if p.default is p.empty]
            parameters = [*required, *derived, *(p for p in own if p.default is not p.empty), assignments]

            def command(**kwargs: Any) -> Any:
                values = {o.path: _value(o, kwargs.pop(p)) for p, o in by_parameter.items()}
                for text in kwargs.pop(_SET_PARAMETER) or ():
                    try:
                        path, value = self.assignment(text)
                    except ValueError as e:
                        raise typer.BadParameter(str(e), param_hint="'--set'") from None
                    values[path] = value
                return f(replace_paths(self.default, values), **kwargs)

            command.__name__, command.__qualname__, command.__doc__ = f.__name__, f.__qualname__, f.__doc__
            command.__module__ = f.__module__
            command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
            command.__annotations__ = {p.name: p.annotation for p in parameters}
            app.command(name)(command)
            return f

        return decorator


def _typer_type(option: ConfigOption) -> Any:
    """The type typer parses: the field's own for bool / int / float / str, a list for repeated strings,
    else the text that :func:`parse_value` reads."""
    kind = option.kind
    if kind in ("bool", "int", "float", "str"):
        return option.annotation
    if kind == "strs":
        return Optional[list[str]]  # noqa: UP045  (typer reads typing objects)
    return Optional[str] if option.default is None else str  # noqa: UP045


def _typer_option(option: ConfigOption) -> Any:
    kind = option.kind
    declaration = option.flag
    if kind == "bool":
        declaration += "/--" + (option.off_name or "no_" + option.name).replace("_", "-")
    if kind in ("bool", "int", "float", "str"):
        default = option.default
    elif kind == "strs" or option.default is None:
        default = None
    else:
        default = format_value(option.annotation, option.default)
    help_text = option.help[:1].upper() + option.help[1:] + _HINTS.get(kind, "")
    if kind == "strs" and option.default:
        help_text += f" Default: {format_value(option.annotation, option.default)}."
    panel = f"{option.path.split('.')[0]} options" if "." in option.path else None
    metavar = {"grid": "ROWSxCOLS", "ints": "N,N,...", "strs": "TEXT"}.get(kind)
    return typer.Option(default, declaration, help=help_text, rich_help_panel=panel, metavar=metavar)


def _value(option: ConfigOption, raw: Any) -> Any:
    """The config value of what typer parsed for ``option``."""
    kind = option.kind
    if kind in ("bool", "int", "float", "str"):
        return raw
    if kind == "strs":
        return option.default if raw is None else tuple(raw)
    if raw is None:
        return None
    try:
        return parse_value(option.annotation, raw)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=f"'{option.flag}'") from None
