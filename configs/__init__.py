"""Config files and command-line overrides.

A config is a TOML file whose sections fill dataclasses (`[model]` -> ModelArgs, `[data]` ->
DataConfig, ...). Any key can be overridden on the command line as `--section.key value`.
Unknown sections or keys and values of the wrong type are errors that say what is valid.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path

CONFIG_DIR = Path(__file__).parent
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ConfigError(ValueError):
    """A bad config file, key or value; the message says what is valid."""


def _field_types(cls) -> dict[str, tuple[type, bool]]:
    """{field name: (base type, whether None is allowed)} for a dataclass."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        hint, optional = hints[f.name], False
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint, optional = args[0], True
        out[f.name] = (hint, optional)
    return out


def _convert(value, kind: type, optional: bool, where: str):
    """Check a TOML value, or parse a command-line string, as `kind`."""
    from_cli = isinstance(value, str) and kind is not str
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if from_cli and value.lower() in TRUE + FALSE:
                return value.lower() in TRUE
        elif kind is int:
            if from_cli:
                return int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif kind is float:
            if from_cli:
                return float(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif kind is str and isinstance(value, str):
            return value
    except ValueError:
        pass
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
    raise ConfigError(f"{where} must be {expected}{' or none' if optional else ''}, got {value!r}")


def parse_overrides(tokens: list[str]) -> dict[str, dict[str, str]]:
    """['--train.lr', '3e-4', '--data.dir=x'] -> {'train': {'lr': '3e-4'}, 'data': {'dir': 'x'}}"""
    out: dict[str, dict[str, str]] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            raise ConfigError(f"unexpected argument {token!r}; overrides look like --section.key value")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        elif i + 1 < len(tokens):
            key, value = token[2:], tokens[i + 1]
            i += 2
        else:
            raise ConfigError(f"{token} needs a value")
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def read_toml(config_file: str | Path) -> dict:
    path = Path(config_file)
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.toml")))
        raise ConfigError(f"config file {path} does not exist (shipped configs in {CONFIG_DIR}: {known})")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def load(
    sections: dict[str, type], base: str | Path | dict | None, overrides: list[str] = (), ignore_sections: bool = False
) -> dict[str, object]:
    """Fill each section's dataclass from `base` (defaults where it is silent), then the overrides.

    sections: {'model': ModelArgs, 'data': DataConfig, ...}; base: a TOML file, or an already
    parsed {section: {key: value}} (a checkpoint's config.json). Returns {'model': ModelArgs(...), ...}.
    A section of the base that is not in `sections` is an error, so a typo never goes unnoticed,
    unless `ignore_sections` (a tool that reads one section of a training config).
    """
    values: dict[str, dict] = {name: {} for name in sections}
    path = "the config" if isinstance(base, dict) else base
    if base is not None:
        data = base if isinstance(base, dict) else read_toml(base)
        for section, table in data.items():
            if ignore_sections and section not in sections:
                continue
            if section not in sections or not isinstance(table, dict):
                raise ConfigError(f"{path}: unknown section [{section}]; valid sections: {', '.join(sections)}")
            values[section].update(table)
    for section, table in parse_overrides(list(overrides)).items():
        if section not in sections:
            raise ConfigError(f"unknown section in --{section}.*; valid sections: {', '.join(sections)}")
        values[section].update(table)

    result = {}
    for section, cls in sections.items():
        types_ = _field_types(cls)
        unknown = sorted(set(values[section]) - set(types_))
        if unknown:
            raise ConfigError(f"unknown key {section}.{unknown[0]}; valid keys in [{section}]: {', '.join(types_)}")
        converted = {k: _convert(v, *types_[k], f"{section}.{k}") for k, v in values[section].items()}
        try:
            result[section] = cls(**converted)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return result


def as_dict(config: dict[str, object]) -> dict[str, dict]:
    """{'model': ModelArgs(...), ...} -> plain nested dicts (for config.json, wandb)."""
    return {name: dataclasses.asdict(value) for name, value in config.items()}
