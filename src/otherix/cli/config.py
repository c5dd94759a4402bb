"""The CLI's ``~/.otherix/config`` file and endpoint/token resolution (docs/pool-contract.md §11.5).

Owns the on-disk shape of the kubeconfig-like cluster list (load, atomic
save, add/remove/use an entry) and the precedence rules that turn global
flags, environment and that file into one endpoint and token. The CLI's root
command calls :func:`default_config_path`, :func:`load_config` and
:func:`resolve`; the ``config`` command group calls the editing functions and
:func:`save_config`. Pure apart from the two file functions; never does HTTP.

File layout::

    apiVersion: v1
    kind: Config
    current-cluster: dev
    clusters:
      - name: dev
        server: http://localhost:8080
        token: otx_...
        token-id: <uuid>     # omitted when empty
      - name: prod           # a control plane with several replicas
        server: https://cp-a:8080
        servers:             # tried in order; the CLI fails over between them
          - https://cp-a:8080
          - https://cp-b:8080
        token: otx_...

``servers`` lists every replica's URL; when it is there it wins, and
``server`` (written as its first URL) is what older CLIs read. A file with
only ``server`` is a list of one, as before.

Choices docs/pool-contract.md leaves open: empty flag or environment values count
as unset; an explicit ``--cluster`` naming no entry is an error even when
``--endpoint``/``--token`` are also given; a ``current-cluster`` naming no
entry is an error only when the endpoint has to come from it.

A token goes only to its own server: when ``--endpoint`` (or
``$OTHERIX_SERVER``) names a server that is not the entry's (compared as
scheme, host and port, default ports filled in, and path), the entry's token
is withheld (``Resolved.withheld_from``) and the command needs an explicit
``--token`` or ``$OTHERIX_API_TOKEN``; otherwise a mistyped or hostile
endpoint would receive the cluster's credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from otherix.fsatomic import atomic_write

__all__ = [
    "CliConfig",
    "ClusterEntry",
    "ClusterNotFound",
    "ConfigError",
    "Resolved",
    "add_cluster",
    "default_config_path",
    "find_cluster",
    "load_config",
    "remove_cluster",
    "resolve",
    "same_server",
    "save_config",
    "use_cluster",
]

ENV_SERVER = "OTHERIX_SERVER"
ENV_TOKEN = "OTHERIX_API_TOKEN"  # noqa: S105 - an env var name, not a secret
ENV_CONFIG = "OTHERIX_CONFIG"
NO_ENDPOINT = (
    "no control-plane endpoint: pass --endpoint, set OTHERIX_SERVER, "
    "or run 'otherix config add cluster'"
)


class ConfigError(Exception):
    """The config file or the flags/env around it cannot be used."""


class ClusterNotFound(ConfigError):
    """A cluster name (``--cluster``, ``config use``/``remove``) has no entry."""


def cluster_not_found(name: str) -> str:
    return f"cluster \"{name}\" not found in config; run 'otherix config list' to see the clusters"


@dataclass
class ClusterEntry:
    """One ``clusters[]`` entry: where a control plane is and how to log in."""

    name: str
    server: str
    token: str
    token_id: str | None = None
    #: Every replica's URL, ``server`` first; empty means ``server`` alone.
    servers: list[str] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        """The control-plane URLs of this entry, in the order they are tried."""
        if self.servers:
            return list(self.servers)
        return [self.server] if self.server else []


@dataclass
class CliConfig:
    """The whole config file; ``current_cluster`` is ``""`` when unset."""

    current_cluster: str = ""
    clusters: list[ClusterEntry] = field(default_factory=list)


@dataclass(frozen=True)
class Resolved:
    """Where a command connects and with what, plus where each came from.

    Sources are ``flag``, ``env`` or ``config:<name>``. ``token`` (and its
    source) is None when nothing supplies one; the caller decides whether
    that is an error. ``cluster_name`` is the config entry consulted, if any.
    ``withheld_from`` names that entry when its token was not used because
    the endpoint is another server's.
    """

    endpoint: str
    endpoint_source: str
    token: str | None
    token_source: str | None
    cluster_name: str | None
    #: Every URL to try (a config entry's ``servers``), ``endpoint`` first.
    endpoints: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return self.endpoints or (self.endpoint,)

    withheld_from: str | None = None


def default_config_path(env: Mapping[str, str]) -> Path:
    """``$OTHERIX_CONFIG`` if set, else ``~/.otherix/config`` (``$HOME`` first)."""
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".otherix" / "config"


def _str_field(raw: Mapping[str, Any], key: str, where: str, *, required: bool) -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: missing {key!r}")
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key!r} must be a string")
    return value


def _servers_field(raw: Mapping[str, Any], where: str) -> list[str]:
    value = raw.get("servers")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: 'servers' must be a list of URLs")
    return list(value)


def _parse(raw: object, path: Path) -> CliConfig:
    if raw is None:
        return CliConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    for key, expected in (("apiVersion", "v1"), ("kind", "Config")):
        if raw.get(key) not in (None, expected):
            raise ConfigError(f"config file {path}: {key} must be {expected!r}")
    current = _str_field(raw, "current-cluster", f"config file {path}", required=False)
    items = raw.get("clusters") or []
    if not isinstance(items, list):
        raise ConfigError(f"config file {path}: 'clusters' must be a list")
    clusters: list[ClusterEntry] = []
    for index, item in enumerate(items):
        where = f"config file {path}: clusters[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping")
        name = _str_field(item, "name", where, required=True)
        if not name:
            raise ConfigError(f"{where}: 'name' must not be empty")
        if find_cluster(CliConfig(clusters=clusters), name) is not None:
            raise ConfigError(f'{where}: duplicate cluster name "{name}"')
        token_id = _str_field(item, "token-id", where, required=False)
        servers = _servers_field(item, where)
        server = _str_field(item, "server", where, required=False)
        clusters.append(
            ClusterEntry(
                name=name,
                server=servers[0] if servers else server,
                token=_str_field(item, "token", where, required=False),
                token_id=token_id or None,
                servers=servers if len(servers) > 1 else [],
            )
        )
    return CliConfig(current_cluster=current, clusters=clusters)


def load_config(path: Path) -> CliConfig:
    """Read the config file; a missing (or empty) file is an empty config.

    Raises ``ConfigError`` naming the file when it is unreadable, is not
    valid YAML or does not have the expected shape.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CliConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: malformed YAML: {exc}") from exc
    return _parse(raw, path)


class _IndentedDumper(yaml.SafeDumper):
    """Indents list items under their key (``clusters:\\n  - name: …``)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _to_yaml(cfg: CliConfig) -> str:
    clusters: list[dict[str, Any]] = []
    for entry in cfg.clusters:
        urls = entry.urls
        item: dict[str, Any] = {"name": entry.name, "server": urls[0] if urls else ""}
        if len(urls) > 1:
            item["servers"] = urls
        item["token"] = entry.token
        if entry.token_id:
            item["token-id"] = entry.token_id
        clusters.append(item)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-cluster": cfg.current_cluster,
        "clusters": clusters,
    }
    return yaml.dump(doc, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False)


def save_config(path: Path, cfg: CliConfig) -> None:
    """Write the config atomically, readable by the owner only.

    Creates the directory with mode 0700 if missing, then replaces the file
    with ``otherix.fsatomic.atomic_write`` (a 0600 temp file beside the
    target, fsynced, renamed over it, the directory fsynced; the temp file is
    removed on failure).
    """
    directory = path.parent
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
    atomic_write(path, _to_yaml(cfg).encode("utf-8"), 0o600)


def find_cluster(cfg: CliConfig, name: str) -> ClusterEntry | None:
    """The entry called exactly ``name``, or None."""
    return next((c for c in cfg.clusters if c.name == name), None)


def add_cluster(cfg: CliConfig, entry: ClusterEntry, *, force: bool, set_current: bool) -> None:
    """Add ``entry`` to ``cfg`` in place; ``force`` replaces a same-named one.

    A replaced entry keeps its position. ``set_current`` makes it current.
    """
    if not entry.name:
        raise ConfigError("cluster name must not be empty")
    for index, existing in enumerate(cfg.clusters):
        if existing.name == entry.name:
            if not force:
                raise ConfigError(
                    f'cluster "{entry.name}" already exists (use --force to replace it)'
                )
            cfg.clusters[index] = entry
            break
    else:
        cfg.clusters.append(entry)
    if set_current:
        cfg.current_cluster = entry.name


def remove_cluster(cfg: CliConfig, name: str) -> None:
    """Remove ``name`` in place; if it was current, the alphabetically first
    remaining entry becomes current (``""`` when none remains)."""
    entry = find_cluster(cfg, name)
    if entry is None:
        raise ClusterNotFound(cluster_not_found(name))
    cfg.clusters.remove(entry)
    if cfg.current_cluster == name:
        cfg.current_cluster = min((c.name for c in cfg.clusters), default="")


def use_cluster(cfg: CliConfig, name: str) -> None:
    """Make ``name`` the current cluster (in place)."""
    if find_cluster(cfg, name) is None:
        raise ClusterNotFound(cluster_not_found(name))
    cfg.current_cluster = name


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _server_key(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a malformed port never matches a real one
        port = -1
    return (
        scheme,
        (parts.hostname or "").lower(),
        port if port is not None else _DEFAULT_PORTS.get(scheme),
        parts.path.rstrip("/"),
    )


def entry_servers(entry: ClusterEntry) -> list[str]:
    """Every server URL an entry names: ``server`` plus any ``servers`` (failover) list."""
    extra = getattr(entry, "servers", None) or []
    return [entry.server, *(str(s) for s in extra)]


def same_server(endpoint: str, entry: ClusterEntry) -> bool:
    """Whether ``endpoint`` is one of the entry's own servers (its token may go there)."""
    key = _server_key(endpoint)
    return any(s and _server_key(s) == key for s in entry_servers(entry))


def resolve(
    flag_endpoint: str | None,
    flag_token: str | None,
    flag_cluster: str | None,
    env: Mapping[str, str],
    cfg: CliConfig,
) -> Resolved:
    """Pick the endpoint and token by the docs/pool-contract.md §11.5 precedence.

    Endpoint: ``--endpoint`` > ``$OTHERIX_SERVER`` > the ``--cluster`` entry
    > the current entry (all of its ``servers``, in ``endpoints``). Token:
    ``--token`` > ``$OTHERIX_API_TOKEN`` > the same entry, and the entry's
    only when the endpoint is one of the entry's servers (else ``token=None``
    and ``withheld_from`` names the entry). With ``--cluster`` only that entry
    is consulted (no fallback to current) and a missing one raises
    ``ClusterNotFound``. No endpoint raises ``ConfigError``; no token gives
    ``token=None``.
    """
    entry: ClusterEntry | None = None
    if flag_cluster:
        entry = find_cluster(cfg, flag_cluster)
        if entry is None:
            raise ClusterNotFound(cluster_not_found(flag_cluster))
    elif cfg.current_cluster:
        entry = find_cluster(cfg, cfg.current_cluster)
    source = f"config:{entry.name}" if entry is not None else ""

    endpoints: tuple[str, ...] = ()
    if flag_endpoint:
        endpoint, endpoint_source = flag_endpoint, "flag"
    elif env.get(ENV_SERVER):
        endpoint, endpoint_source = env[ENV_SERVER], "env"
    elif entry is not None and entry.urls:
        endpoint, endpoint_source = entry.urls[0], source
        endpoints = tuple(entry.urls)
    elif entry is None and cfg.current_cluster and not flag_cluster:
        raise ClusterNotFound(
            f'current cluster "{cfg.current_cluster}" not found in config '
            "(run 'otherix config use <name>')"
        )
    else:
        raise ConfigError(NO_ENDPOINT)

    token: str | None = None
    token_source: str | None = None
    withheld: str | None = None
    if flag_token:
        token, token_source = flag_token, "flag"
    elif env.get(ENV_TOKEN):
        token, token_source = env[ENV_TOKEN], "env"
    elif entry is not None and entry.token:
        if endpoint_source == source or same_server(endpoint, entry):
            token, token_source = entry.token, source
        else:
            withheld = entry.name

    return Resolved(
        endpoint=endpoint,
        endpoint_source=endpoint_source,
        token=token,
        token_source=token_source,
        cluster_name=entry.name if entry is not None else None,
        endpoints=endpoints,
        withheld_from=withheld,
    )
