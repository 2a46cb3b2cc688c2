"""Recipe files and YAML values: where recipes are, how their text is read (YAML 1.2 booleans,
no repeated keys) and how a value read is coerced to a key's declared type.

:mod:`classzoo.config` holds the keys, their types and bounds, and builds the ``Config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from classzoo.errors import UserError

RECIPE_DIR = Path(__file__).parent / "recipes"

# libyaml's parser where PyYAML was built with it (3x faster than the pure-Python one; the
# constructor and the resolvers below stay PyYAML's own, so the values are the same)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names one key twice. YAML 1.2.2 section 3.2.1.1: "The content of a mapping
    node is an unordered set of key/value node pairs, with the restriction that each of the keys
    is unique"; PyYAML keeps the last silently, which drops a whole section of a recipe."""

    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(
            f"key {key!r} appears twice (lines {first} and {second}); YAML forbids repeated "
            "keys (the first would be dropped silently)"
        )


class _Loader(_SafeLoader):
    """YAML 1.2 booleans and numbers (the core schema, section 10.3.2). YAML 1.1 also reads
    on/off/yes/no as booleans, which would turn ``amp: off`` into False; ``010`` as octal 8,
    ``1:30`` as base-60 90, and ``1e-5`` (no dot) as a string. Repeated mapping keys are
    refused."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            _refuse_duplicates(self, node, deep)
        return super().construct_mapping(node, deep=deep)


def _refuse_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool) -> None:
    """Only the mapping's own keys: a ``<<: *base`` merge is meant to be overridden by them.
    The keys constructed here are cached by the constructor (``constructed_objects``), so
    PyYAML's own construct_mapping reuses them."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: PyYAML's construct_mapping says so
            continue
        if first is not None:
            raise DuplicateKeyError(key, first, line)
        seen[key] = line


_BOOL, _INT, _FLOAT = (f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float"))
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# the core schema's int and float, plus Python's digit-group underscores (1_000); the int
# resolver is tried first, so "10" is an int and only a dot or an exponent makes a float
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7][0-7_]*|0x[0-9a-fA-F][0-9a-fA-F_]*)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """Decimal unless 0o / 0x: PyYAML's own reads a leading 0 as octal and a colon as base 60."""
    text = loader.construct_scalar(node).replace("_", "")
    if text[:2] in ("0o", "0x"):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


_Loader.add_constructor(_INT, _construct_int)


def parse_yaml(text: str):
    """One YAML document; raises :class:`DuplicateKeyError` (a ``yaml.YAMLError``) for a
    repeated key."""
    return yaml.load(text, Loader=_Loader)


def list_recipes() -> dict[str, str]:
    """Recipe name -> first line of its header comment (the launch command / purpose)."""
    out = {}
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        first = ""
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                first = line.lstrip("# ").strip()
                break
        out[path.stem] = first
    return out


def recipe_path(name_or_file: str) -> tuple[Path, str | None]:
    """Resolve ``NAME[:VARIANT]`` or a YAML path; returns (path, variant)."""
    variant = None
    spec = name_or_file
    if ":" in spec and not Path(spec).exists():
        spec, variant = spec.rsplit(":", 1)
    candidate = Path(spec)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise UserError(f"recipe file {spec} does not exist")
        return candidate, variant
    path = RECIPE_DIR / f"{spec}.yaml"
    if not path.is_file():
        names = sorted(list_recipes())
        close = difflib.get_close_matches(spec, names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UserError(f"unknown recipe '{spec}'{hint} (known: {', '.join(names)})")
    return path, variant


def nearest_key(name: str, prefix: str, allowed: list[str], sections: dict[str, Any]) -> str | None:
    """The key a misplaced or misspelt ``prefix + name`` most likely meant: the same name in
    another section (train.warmup_epochs -> sched.warmup_epochs), else the closest name in its
    own section (``allowed``), else the closest ``section.key`` of all. ``sections``: name ->
    a default instance of each config section."""
    every = [
        f"{s}.{k.name}"
        for s, section in sections.items()
        if dataclasses.is_dataclass(section)
        for k in dataclasses.fields(section)
    ]
    moved = [k for k in every if k.split(".", 1)[1] == name]
    if moved:
        return moved[0]
    own = difflib.get_close_matches(name, allowed, n=1)
    if own:
        return prefix + own[0]
    close = difflib.get_close_matches(prefix + name, every, n=1)
    return close[0] if close else None


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe file's ``{section: {key: value}}``; every way the file is unusable is one line
    naming it."""
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"recipe {path} is not UTF-8 text (byte {exc.start})") from None
    except DuplicateKeyError as exc:
        raise UserError(f"recipe {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is None:  # no document: 0 bytes or only comments; every default is never what it meant
        raise UserError(f"recipe {path} is empty: it sets nothing (not even model.name)")
    if not isinstance(raw, dict):
        raise UserError(f"recipe {path} must be a mapping of sections")
    return raw


def coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """A YAML value (or a ``--set`` string) as the declared type ``tp``; one UserError naming
    ``key`` if it is not one."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, source)
            except UserError as exc:
                errors.append(exc)
        raise errors[0] if errors else UserError(f"{source}: {key} cannot be {value!r}")
    bad = UserError(f"{source}: {key}={value!r} is not a valid {getattr(tp, '__name__', tp)}")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]  # "fc, layer4"
        if not isinstance(value, (list, tuple)):
            raise bad
        (inner,) = typing.get_args(tp)
        return [coerce(v, inner, key, source) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        return _float(value, bad, key, source)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    raise bad


def _float(value: Any, bad: UserError, key: str, source: str) -> float:
    """A finite float: no key is documented to take NaN or inf, and NaN passes every ``<``
    bound (``nan < 0`` is False), so it would reach int(epochs * steps) and fail there."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad
    try:
        number = float(value)
    except (ValueError, OverflowError):  # "abc"; an int past float's range (10**400)
        raise bad from None
    if not math.isfinite(number):
        raise UserError(f"{source}: {key}={value!r} is not a finite number")
    return number
