"""Typed configuration: dataclass defaults + a small experiment YAML + ``key=value`` overrides.

Unknown keys are an error (STEGO's users could not reproduce its paper partly because key checking was off), values
are coerced to the field's type and a value that does not parse is an error naming the key and the expected type.
The resolved config is written into every run folder and embedded in each checkpoint.
"""
from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nbseg.errors import ConfigError

T = TypeVar("T")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key {key!r}: cannot use {value!r} as {annotation}")
    if origin in (tuple, list):
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                value = [v.strip() for v in value.split(",")]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a sequence, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value] if inner is not Any and inner is not Ellipsis else list(value)
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return int(f)
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Build dataclass ``cls`` from defaults updated with ``values``; unknown keys raise :class:`ConfigError`."""
    types = _field_types(cls)
    unknown = sorted(set(values) - set(types))
    renamed = {k: v for k, v in getattr(cls, "RENAMED_KEYS", {}).items() if k in unknown}
    if renamed:
        detail = ", ".join(f"{old!r} is now called {new!r}" for old, new in renamed.items())
        raise ConfigError(f"{source}: {detail}; write {', '.join(f'{new}=...' for new in renamed.values())}")
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(types)}")
    return cls(**{k: _coerce(v, types[k], k) for k, v in values.items()})


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["lr=0.1", "epochs=3"]`` -> ``{"lr": "0.1", "epochs": "3"}``; a pair without '=' is an error."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_config(cls: type[T], experiment_file: str | Path | None = None, overrides: list[str] | dict | None = None
                ) -> T:
    """Defaults (the dataclass) <- experiment YAML <- ``key=value`` overrides, each layer checked for unknown keys."""
    values: dict[str, Any] = {}
    if experiment_file is not None:
        path = Path(experiment_file)
        if not path.is_file():
            raise ConfigError(f"experiment file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
        from_dict(cls, loaded, source=str(path))      # check keys and types of this layer alone
        values.update(loaded)
    if overrides:
        ov = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides)
        from_dict(cls, ov, source="overrides")
        values.update(ov)
    return from_dict(cls, values)


def to_dict(cfg) -> dict[str, Any]:
    """A YAML/JSON-safe dict of a config (tuples become lists)."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
