"""Layered configuration loader shared by ``otherix-api`` and ``otherix-agent``.

Precedence, lowest first: model defaults < YAML file (``--config FILE``) <
``OTHERIX_`` environment variables (``__`` nests: ``OTHERIX_SERVER__LISTEN``
sets ``server.listen``) < command-line overrides. The result is validated by
the process's pydantic settings model, whose models forbid unknown keys, so a
typo in the YAML file fails the start with the key's dotted name.

Environment variables are matched against the model: only variables whose
first segment names a top-level key are read (``OTHERIX_BOOTSTRAP_ADMIN_*``,
``OTHERIX_SERVER`` for the CLI and the like are not config keys and are left
alone). Values are parsed as YAML scalars, so ``[/a/, /b/]``, ``true`` and
``30`` work. Durations accept ``90s``, ``5m``, ``1h``, ``7d`` or seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from otherix.models.validation import validate_allowed_prefixes

ENV_PREFIX = "OTHERIX_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(Exception):
    """The configuration cannot be loaded or is invalid; the message says where."""


def parse_duration(value: object) -> float:
    """``"90s"`` -> 90.0; numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("duration must be a number of seconds or like 30s, 5m, 1h, 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 5m, 1h, 7d)")
    if seconds < 0:
        raise ValueError("duration must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _check_prefixes(value: list[str]) -> list[str]:
    problem = validate_allowed_prefixes(value)
    if problem:
        raise ValueError(problem)
    return value


DEFAULT_POOL_PREFIXES = ("/var/lib/otherix/pools/",)

#: A pool-path allowlist: absolute prefixes ending in ``/``, at least one.
AllowedPrefixes = Annotated[list[str], AfterValidator(_check_prefixes)]


def default_prefixes() -> list[str]:
    return list(DEFAULT_POOL_PREFIXES)


class Section(BaseModel):
    """Base for every config section: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _set_dotted(target: dict[str, Any], parts: list[str], value: Any) -> None:
    node = target
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"config key {'.'.join(parts)} conflicts with a scalar value")
        node = nxt
    node[parts[-1]] = value


def read_yaml_file(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def env_layer(model: type[BaseModel], env: Mapping[str, str]) -> dict[str, Any]:
    """The ``OTHERIX_*`` variables that name keys of ``model``, as a nested dict."""
    top_keys = set(model.model_fields)
    sections = {
        name
        for name, field in model.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    layer: dict[str, Any] = {}
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        if not parts or parts[0] not in top_keys:
            continue
        if parts[0] in sections and len(parts) == 1:
            continue  # e.g. OTHERIX_SERVER is the CLI's endpoint, not the server section
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(layer, parts, value)
    return layer


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {loc}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_config(
    model: type[M],
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> M:
    """Build ``model`` from the four layers, raising :class:`ConfigError` on any problem."""
    data: dict[str, Any] = {}
    if config_file is not None:
        data = _deep_merge(data, read_yaml_file(config_file))
    if env is not None:
        data = _deep_merge(data, env_layer(model, env))
    if overrides:
        nested: dict[str, Any] = {}
        for dotted, value in overrides.items():
            if value is not None:
                _set_dotted(nested, dotted.split("."), value)
        data = _deep_merge(data, nested)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from exc
