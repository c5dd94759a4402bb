"""What a failure reads like on the command line: one sentence, and the exit code.

Owns the wording of every error the ``otherix`` CLI prints, so that each reads
as a sentence (``Error: pool "x" not found; run 'otherix pool list' to see the
pools``) and never as a code chain (``api_error: not_found: ...``):

- :func:`describe` turns any exception escaping a command (API answers,
  transport failures, config problems, unexpected bugs) into that sentence.
  The root command (``otherix.cli.main``) prints it after ``Error: `` and
  exits 1; the manifest runner prints it after the object's label.
- :func:`usage_error` is the exit-2 answer for a command called wrongly (a
  bad ``-o`` value, an unparsable duration, a missing required input): click
  prints it as ``Usage: ...`` / ``Error: ...``, as it does its own.
- :class:`Declined` (exit 1) and :class:`NeedsForce` (exit 2) are what a
  destructive command raises when a prompt is answered "no", or when there is
  no terminal to ask and ``--force`` is absent (``commands.common.
  require_confirmation``).

The server's message is taken as the sentence for an API error; the error
code, the HTTP status and the details are printed only with ``--debug``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from otherix.cli.config import ConfigError
from otherix.cli.context import CliError
from otherix.client.errors import (
    ApiError,
    ClientError,
    ConnectionRefused,
    PathNotAllowedError,
    PermissionDeniedError,
    RequestTimedOut,
    TlsFailed,
    TransportError,
)

__all__ = ["Declined", "NeedsForce", "debug_detail", "describe", "usage_error"]

USAGE_EXIT = 2


class Declined(CliError):
    """A confirmation prompt was answered "no": nothing was done (exit 1)."""


class NeedsForce(click.UsageError):
    """A destructive command with no terminal to ask and no ``--force`` (exit 2)."""


def usage_error(message: str) -> click.UsageError:
    """The exit-2 error for a command called wrongly, with the command's usage line."""
    return click.UsageError(message, ctx=click.get_current_context(silent=True))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def _transport(exc: TransportError) -> str:
    if exc.tried:
        where = " and ".join(_origin(u) for u in exc.tried)
    else:
        where = _origin(exc.url) if exc.url else "its URL"
    reason = exc.reason.strip()
    if isinstance(exc, RequestTimedOut):
        return f"the control plane at {where} did not answer in time"
    if isinstance(exc, TlsFailed):
        return f"the TLS handshake with {where} failed: {reason}"
    if isinstance(exc, ConnectionRefused):
        if "refused" in reason.lower():
            reason = "connection refused"
        return f"cannot connect to the control plane at {where}: {reason}"
    return f"the request to {where} failed: {reason}"


def _api(exc: ApiError) -> str:
    message = exc.message.strip() or f"the control plane answered HTTP {exc.status}"
    if isinstance(exc, PathNotAllowedError):
        prefixes = exc.details.get("allowed_prefixes")
        if isinstance(prefixes, list) and prefixes:
            message += f" (allowed prefixes: {', '.join(str(p) for p in prefixes)})"
    elif isinstance(exc, PermissionDeniedError) and not message.startswith("permission denied"):
        message = f"permission denied: {message}"
    fields = exc.details.get("fields")
    if isinstance(fields, list) and fields:  # the server's per-field reasons
        named = [f"{f.get('field')}: {f.get('reason')}" for f in fields if isinstance(f, dict)]
        message += f" ({'; '.join(named)})" if named else ""
    return message


def describe(exc: BaseException) -> str:
    """The sentence printed for ``exc`` (after ``Error: `` or an object's label)."""
    if isinstance(exc, ApiError):
        return _api(exc)
    if isinstance(exc, TransportError):
        return _transport(exc)
    if isinstance(exc, CliError | ClientError | ConfigError):
        return str(exc)
    detail = str(exc)
    name = type(exc).__name__
    return f"{name}: {detail} (run with --debug for a traceback)" if detail else name


def debug_detail(exc: BaseException) -> str | None:
    """What ``--debug`` adds for an API error: status, code and details."""
    if isinstance(exc, ApiError):
        return f"debug: HTTP {exc.status} {exc.code or '-'} details={exc.details or {}}"
    if isinstance(exc, TransportError):
        return f"debug: {exc}"
    return None
