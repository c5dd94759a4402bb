"""Layered configuration loader shared by ``otherix-api`` and ``otherix-agent``.

Precedence, lowest first: model defaults < YAML file (``--config FILE``) <
``OTHERIX_`` environment variables (``__`` nests: ``OTHERIX_SERVER__LISTEN``
sets ``server.listen``) < command-line overrides. The result is validated by
the process's pydantic settings model, whose models forbid unknown keys, so a
typo in the YAML file fails the start with the key's dotted name.

Environment variables are matched against the model: a variable is read
when its ``__``-separated path names a key of the model (a leaf, or a nested
section given as a YAML mapping). Values are parsed as YAML scalars, so
``[/a/, /b/]``, ``true`` and ``30`` work. Durations accept ``90s``, ``5m``,
``1h``, ``7d``, ``1h30m`` or seconds (the grammar of :mod:`otherix.durations`).

Unknown variables stop the start (:func:`check_env`), as unknown file keys
do: an ``OTHERIX_`` variable that none of the three programs knows is an
error naming it and the closest known one (``OTHERIX_SERVR__LISTEN: unknown
setting; did you mean OTHERIX_SERVER__LISTEN?``). "Known" is the union of
every settings model's keys (:data:`SETTINGS_MODELS`, read from the models
themselves, so a key added to a model is known at once) and the programs'
own variables (:data:`PROGRAM_ENV_VARS`, the one list of them: the CLI's
``OTHERIX_SERVER``, ``OTHERIX_CONFIG`` ..., the API's bootstrap admin, the
agent's join token, and the test suite's). A variable another program knows
is left alone: one environment file may serve the API, the agent and the
CLI. ``otherix-api`` and ``otherix-agent`` check through :func:`load_config`;
the CLI calls :func:`check_env` from its root command.
"""

from __future__ import annotations

import difflib
import importlib
import types
import typing
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from otherix import durations
from otherix.domain.paths import validate_allowed_prefixes

ENV_PREFIX = "OTHERIX_"

#: The settings model of each program that has one, by import path. Read
#: lazily and only for their field names, to tell a known ``OTHERIX_``
#: variable from a typo (the CLI has no settings model; it knows the API's
#: and the agent's keys through this, without importing those packages up
#: front). The one deliberate reach from a shared module into the process
#: packages: it reads schemas, never runs process code.
SETTINGS_MODELS = (
    "otherix.api.settings:ApiSettings",
    "otherix.agent.settings:AgentSettings",
)

#: Every ``OTHERIX_`` variable that is not a settings key, for all three
#: programs: known everywhere, never refused. Add a new one here (a test
#: scans the sources and fails on one that is missing).
PROGRAM_ENV_VARS = frozenset(
    {
        # otherix (the CLI): endpoint, token, config file, login prompts
        "OTHERIX_SERVER",
        "OTHERIX_API_TOKEN",
        "OTHERIX_CONFIG",
        "OTHERIX_LOGIN",
        "OTHERIX_PASSWORD",
        "OTHERIX_NEW_PASSWORD",
        # otherix-api serve: the bootstrap admin
        "OTHERIX_BOOTSTRAP_ADMIN_USERNAME",
        "OTHERIX_BOOTSTRAP_ADMIN_PASSWORD",
        # otherix-agent bootstrap
        "OTHERIX_JOIN_TOKEN",
        "OTHERIX_REJOIN_TOKEN",
        # the test suite, CI and benchmarks
        "OTHERIX_TEST_POSTGRES_URL",
        "OTHERIX_TEST_WORKERS",
        "OTHERIX_FAULT_SEED",
        "OTHERIX_BENCH_NODES",
        "OTHERIX_FLOOD_MODE",  # bench/login_flood.lua, read by wrk
        "OTHERIX_FLOOD_DELAY_MS",
    }
)


class ConfigError(Exception):
    """The configuration cannot be loaded or is invalid; the message says where."""


def parse_duration(value: object) -> float:
    """``"90s"`` -> 90.0; numbers are seconds. Text follows :mod:`otherix.durations`."""
    if isinstance(value, bool):
        raise ValueError("duration must be a number of seconds or like 30s, 5m, 1h, 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = durations.parse_duration(value)
        except ValueError:
            raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 5m, 1h, 7d)") from None
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


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (``Section``, ``Section | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _is_mapping(annotation: Any) -> bool:
    """Whether a field holds free-form keys (``dict[str, str]``): any sub-path is its own."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, Annotated):
        return any(_is_mapping(arg) for arg in typing.get_args(annotation))
    return annotation is dict or (isinstance(origin, type) and issubclass(origin, Mapping))


def model_has(model: type[BaseModel], parts: list[str]) -> bool:
    """Whether the lower-case key path ``parts`` names a key of ``model``.

    A leaf, or a nested section (a YAML mapping then sets it whole); a single
    top-level section is not a key (``OTHERIX_SERVER`` is the CLI's endpoint,
    not the API's ``server`` section).
    """
    current: type[BaseModel] = model
    for depth, part in enumerate(parts):
        field = current.model_fields.get(part)
        if field is None:
            return False
        nested = _models_in(field.annotation)
        if depth == len(parts) - 1:
            return not (nested and len(parts) == 1)
        if _is_mapping(field.annotation):
            return True
        if not nested:
            return False
        current = nested[0]
    return False


def _leaf_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, field in model.model_fields.items():
        nested = _models_in(field.annotation)
        if nested:
            yield from _leaf_paths(nested[0], (*prefix, name))
        else:
            yield (*prefix, name)


def env_name(path: tuple[str, ...] | list[str]) -> str:
    """``("server", "listen")`` -> ``OTHERIX_SERVER__LISTEN``."""
    return ENV_PREFIX + "__".join(path).upper()


def _parts(var: str) -> list[str]:
    return [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]


@cache
def settings_models() -> tuple[type[BaseModel], ...]:
    """The models of :data:`SETTINGS_MODELS`, imported on first use."""
    models = []
    for ref in SETTINGS_MODELS:
        module, _, name = ref.partition(":")
        models.append(getattr(importlib.import_module(module), name))
    return tuple(models)


def _known_names() -> list[str]:
    names = set(PROGRAM_ENV_VARS)
    for model in settings_models():
        names.update(env_name(path) for path in _leaf_paths(model))
    return sorted(names)


def _unknown_message(var: str) -> str:
    known = _known_names()
    tail = var[len(ENV_PREFIX) :].upper()
    close = difflib.get_close_matches(tail, [k[len(ENV_PREFIX) :] for k in known], n=1, cutoff=0.6)
    if close:
        return f"{var}: unknown setting; did you mean {ENV_PREFIX}{close[0]}?"
    section = [k for k in known if k.startswith(f"{var}__")]
    if section:
        return f"{var}: unknown setting; it is a section: set its keys, like {section[0]}"
    return (
        f"{var}: unknown setting (no program of Otherix reads it; "
        "the variables are listed in docs/configuration.md)"
    )


def check_env(env: Mapping[str, str], model: type[BaseModel] | None = None) -> None:
    """Raise :class:`ConfigError` for each ``OTHERIX_`` variable no program knows.

    ``model`` is the calling program's own settings model, checked first so a
    start with only its own variables never imports the others.
    """
    unknown = []
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in PROGRAM_ENV_VARS:
            continue
        parts = _parts(var)
        if model is not None and model_has(model, parts):
            continue
        if any(model_has(m, parts) for m in settings_models()):
            continue
        unknown.append(_unknown_message(var))
    if unknown:
        raise ConfigError("\n".join(unknown))


def env_layer(model: type[BaseModel], env: Mapping[str, str]) -> dict[str, Any]:
    """The ``OTHERIX_*`` variables that name keys of ``model``, as a nested dict."""
    layer: dict[str, Any] = {}
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var in PROGRAM_ENV_VARS:
            continue
        parts = _parts(var)
        if not model_has(model, parts):
            continue  # another program's key (check_env refuses the unknown ones)
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
        check_env(env, model)
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
