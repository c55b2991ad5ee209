"""Typed configs: validation with field-named errors, dotted overrides, JSON (de)serialisation.

Every config is a pydantic model that forbids unknown keys, so a typo is an error naming the key,
never a silently ignored setting.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

SCHEMA_VERSION = 1

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """Bad configuration or input: the message is one line naming the field, the value and the fix."""


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def parse(cls: type[C], data: dict[str, Any], where: str = "") -> C:
        """Validate `data`, turning pydantic's report into one ConfigError line per problem."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(describe_validation_error(e, where)) from None


def describe_validation_error(e: ValidationError, where: str = "") -> str:
    parts = []
    for err in e.errors():
        key = ".".join(str(p) for p in (where, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        shown = err["loc"] and err["type"] not in ("extra_forbidden", "missing") and not isinstance(err["input"], dict)
        got = f" (got {err['input']!r})" if shown else ""
        named = key and not msg.startswith(key)  # model validators already name their fields
        parts.append(f"{key}: {msg}{got}" if named else f"{msg}{got}")
    return "; ".join(parts)


def parse_value(text: str) -> Any:
    """`--set` values: JSON when it parses (numbers, bools, lists, null), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: C, overrides: dict[str, Any], label: str = "--set") -> C:
    """Return a copy of `cfg` with dotted keys (`model.n_layers`) set; unknown keys are errors.
    Inside a free-form dict field (e.g. `variants.<name>.model.x`) missing levels are created."""
    data = cfg.model_dump()
    for dotted, value in overrides.items():
        node, model_cls, free = data, type(cfg), False
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            if free:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{label} {dotted}: '{part}' is a value, not a section")
                continue
            fields = check_key(model_cls, part, dotted, ".".join(parents[:i]), label)
            annotation = section_type(fields[part].annotation)
            model_cls = annotation if isinstance(annotation, type) and issubclass(annotation, Config) else None
            free = model_cls is None and getattr(annotation, "__origin__", None) is dict
            if node.get(part) is None and model_cls is not None:
                raise ConfigError(f"{label} {dotted}: '{part}' is null (off); give it whole, as JSON, to turn it on")
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{label} {dotted}: '{part}' is a value, not a section")
            node = node[part]
        if not free:
            check_key(model_cls, leaf, dotted, ".".join(parents), label)
        node[leaf] = parse_value(value) if isinstance(value, str) else value
    return type(cfg).parse(data)


def section_type(annotation: Any) -> Any:
    """`X | None` → X for a config section that may be off; any other annotation as it is."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(annotation) else annotation


def check_key(model_cls: type[Config] | None, part: str, dotted: str, prefix: str, label: str) -> dict:
    fields = model_cls.model_fields if model_cls else {}
    if part not in fields:
        allowed = ", ".join(sorted(fields)) or "none"
        where = f" in '{prefix}'" if prefix else ""
        raise ConfigError(f"{label} {dotted}: unknown key '{part}'{where}; known keys: {allowed}")
    return fields


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"n_layers": 3}}` → `{"model.n_layers": 3}` (lists and scalars are leaves)."""
    flat = {}
    for key, value in nested.items():
        dotted = f"{prefix}{key}"
        flat.update(flatten(value, dotted + ".") if isinstance(value, dict) else {dotted: value})
    return flat


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`["a.b=1", "c=x"]` → `{"a.b": "1", "c": "x"}`."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set model.n_layers=4")
        out[key.strip()] = value.strip()
    return out


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read JSON with an error that names the file (missing, unreadable or corrupt)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: {what} is not valid JSON ({e})") from None


def check_schema_version(data: dict, path: str | Path) -> None:
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise ConfigError(
            f"{path}: schema_version {version!r} is not supported (this workbench reads 1..{SCHEMA_VERSION}); "
            "upgrade workbench or re-create the file"
        )
