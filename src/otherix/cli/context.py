"""The per-invocation CLI context: I/O, environment, config and HTTP clients.

Owns everything a command needs from the outside world, so tests can inject
it (the httpie/cli ``context.py`` pattern): the stdout/stderr writers, stdin
(whether it is a TTY, and reading one answer from it), the environment
mapping, clocks, the config-file path and the resolved endpoint and token
(docs/pool-contract.md §11.5), and the :class:`~otherix.client.api.ApiClient` factory. A config
entry with several ``servers`` gives one client over all of them (failover
lives in ``otherix.client.base``).

The root command (``otherix.cli.main``) fills in the global flags; every
command reaches it with :func:`get_context`. Tests build one with their own
``env``, ``is_tty``, ``sleep`` or ``client_factory`` and pass it as click's
``obj`` (``CliRunner().invoke(cli, args, obj=CliContext(...))``).

Writers default to ``click.echo`` looked up at call time, so click's
``CliRunner`` captures them. Endpoint and token are resolved lazily: the
``config`` and ``completion`` commands never need them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click

from otherix.cli.config import CliConfig, ConfigError, Resolved, default_config_path, load_config
from otherix.cli.config import resolve as resolve_config
from otherix.client.api import ApiClient

__all__ = ["CliContext", "CliError", "get_context"]

NO_CREDENTIAL = (
    "no API token: pass --token, set OTHERIX_API_TOKEN, or run 'otherix config add cluster'"
)

Writer = Callable[[str], None]
#: (URL or URLs in failover order, token, timeout) -> client
ClientFactory = Callable[[str | Sequence[str], str | None, float], ApiClient]
DEFAULT_TIMEOUT = 30.0


class CliError(Exception):
    """A command failed; the root command prints ``Error: <message>``, exit 1."""


def _stdout(text: str) -> None:
    click.echo(text, nl=False)


def _stderr(text: str) -> None:
    click.echo(text, nl=False, err=True)


def _default_client(base_url: str | Sequence[str], token: str | None, timeout: float) -> ApiClient:
    return ApiClient(base_url, token, timeout=timeout)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CliContext:
    """What a command may touch. Every field has a production default."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    out: Writer = field(default=_stdout)
    err: Writer = field(default=_stderr)
    #: Whether stdin is a terminal; ``None`` asks the real stdin at use time.
    is_tty: bool | None = None
    client_factory: ClientFactory = field(default=_default_client)
    sleep: Callable[[float], None] = field(default=time.sleep)
    monotonic: Callable[[], float] = field(default=time.monotonic)
    now: Callable[[], datetime] = field(default=_now)
    # Global flags, set by the root command.
    flag_endpoint: str | None = None
    flag_token: str | None = None
    flag_cluster: str | None = None
    flag_config: str | None = None
    debug: bool = False
    _clients: list[ApiClient] = field(default_factory=list, repr=False)

    # output -----------------------------------------------------------------
    def write(self, text: str) -> None:
        """Write ``text`` to stdout as-is (renderers end their text with a newline)."""
        if text:
            self.out(text)

    def line(self, text: str = "") -> None:
        """Write one line to stdout."""
        self.out(text + "\n")

    def warn(self, text: str) -> None:
        """Write one line to stderr (progress, hints, warnings)."""
        self.err(text + "\n")

    # input ------------------------------------------------------------------
    def stdin_is_tty(self) -> bool:
        if self.is_tty is not None:
            return self.is_tty
        return sys.stdin is not None and sys.stdin.isatty()

    def ask(self, question: str) -> str:
        """Print ``question`` on stderr and read one line from stdin (``""`` at EOF)."""
        self.err(question)
        answer = sys.stdin.readline() if sys.stdin is not None else ""
        if not answer.endswith("\n"):
            self.err("\n")
        return answer.strip()

    def prompt(self, label: str, *, hidden: bool = False) -> str:
        """Ask for a value on a terminal (stderr prompt; hidden for secrets)."""
        value: object = click.prompt(label, hide_input=hidden, err=True, type=str)
        return str(value)

    # config and clients -----------------------------------------------------
    @property
    def config_path(self) -> Path:
        """``--config`` > ``$OTHERIX_CONFIG`` > ``~/.otherix/config``."""
        if self.flag_config:
            return Path(self.flag_config).expanduser()
        return default_config_path(self.env)

    def load_config(self) -> CliConfig:
        return load_config(self.config_path)

    def resolve(self) -> Resolved:
        """Endpoint and token by precedence, flag > env > config (docs/pool-contract.md §11.5)."""
        return resolve_config(
            self.flag_endpoint, self.flag_token, self.flag_cluster, self.env, self.load_config()
        )

    def client(self) -> ApiClient:
        """An authenticated client for the resolved endpoint; closed at exit.

        With ``--debug`` it says on stderr where the endpoint and token came
        from (``flag``, ``env`` or ``config:<name>``).
        """
        resolved = self.resolve()
        if self.debug:
            self.warn(
                f"debug: endpoint {', '.join(resolved.urls)} ({resolved.endpoint_source}), "
                f"token ({resolved.token_source or 'none'})"
            )
        if not resolved.token and resolved.withheld_from:
            raise ConfigError(
                f'not sending the token of cluster "{resolved.withheld_from}" to '
                f"{resolved.endpoint}: that is not the cluster's server; pass --token "
                "(or set OTHERIX_API_TOKEN) for that server"
            )
        if not resolved.token:
            raise ConfigError(NO_CREDENTIAL)
        urls = resolved.urls
        return self.client_for(urls[0] if len(urls) == 1 else urls, resolved.token)

    def client_for(
        self,
        endpoint: str | Sequence[str],
        token: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ApiClient:
        """A client for an explicit endpoint/token (``config add cluster``);
        several endpoints are replicas the client fails over between."""
        api = self.client_factory(endpoint, token, timeout)
        self._clients.append(api)
        return api

    def close(self) -> None:
        while self._clients:
            self._clients.pop().close()


def get_context() -> CliContext:
    """The :class:`CliContext` of the running command."""
    ctx = click.get_current_context()
    obj = ctx.find_object(CliContext)
    if obj is None:  # a sub-command invoked without the root group (tests)
        obj = ctx.ensure_object(CliContext)
    return obj
