"""``HttpClient``: control-plane URLs with failover, bearer token, timeouts, JSON.

The one place, for the CLI and the agent alike, that knows a control plane
may have several replicas. A client is given one URL or several (the agent's
``--server`` list, a CLI context's ``servers:``). Each request goes to the
*current* URL; when that URL gives no HTTP answer, the request moves on to the
next URL, and the one that answers becomes current, so later requests stay on
it (sticky, not round-robin). An HTTP answer, even a 5xx, is never a reason
to move: the replica is there and said something.

Which failures move a request on:

- nothing reached a server (connection refused or reset while connecting,
  TLS handshake failed, connect timeout, no free connection in the pool):
  every request moves on;
- the request may have reached a server (no answer in time, connection cut
  after sending): only requests that are safe to send twice move on, namely
  ``GET``/``HEAD``/``PUT``/``DELETE``/``OPTIONS``, requests with an
  ``Idempotency-Key``, and calls the subclass marks ``resend_ok`` (the
  agent's heartbeat and task reports). Any other request raises, and the
  *next* request starts at the next URL.

Failing over is the client's part of the one retry vocabulary
(``otherix.retry``): only a transport failure (a ``Retryable``
``TransportError``) moves a request on, at once, each URL once per request;
pacing repeated requests is the caller's (the agent's ``Backoff``).

With a single URL nothing changes from a plain client: same requests, same
errors. With several, a request that fails everywhere raises the last URL's
error, naming every URL tried.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any, Self

import httpx

from otherix import __version__
from otherix.client.errors import TransportError, from_httpx, from_response

DEFAULT_TIMEOUT = 30.0
#: Methods HTTP defines as idempotent: sending one twice has the effect of once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: No byte of the request reached a server: any request may go to the next URL.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: The request may have reached a server: only a request safe to repeat moves on.
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def url_list(base_url: str | Sequence[str]) -> tuple[str, ...]:
    """One URL or several -> a tuple of URLs without trailing slashes, in order,
    duplicates dropped."""
    given = [base_url] if isinstance(base_url, str) else list(base_url)
    urls: list[str] = []
    for url in given:
        clean = url.rstrip("/")
        if clean and clean not in urls:
            urls.append(clean)
    if not urls:
        raise ValueError("at least one control-plane URL is needed")
    return tuple(urls)


class HttpClient:
    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
        trust_env: bool = True,
    ) -> None:
        """``base_url``: one control-plane URL or several (replicas, tried in
        order). ``trust_env``: honour ``SSL_CERT_FILE``/``SSL_CERT_DIR`` and
        proxy variables, as users of a command-line tool expect; the agent
        turns it off and passes its own transport (``control_plane.ca_file``)."""
        self.base_urls = url_list(base_url)
        self._current = 0
        self.token = token
        headers = {"User-Agent": f"otherix/{__version__}"}
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            verify=verify,
            headers=headers,
            trust_env=trust_env,
        )

    @property
    def base_url(self) -> str:
        """The URL requests go to now (the last one that answered)."""
        return self.base_urls[self._current]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        resend_ok: bool | None = None,
    ) -> httpx.Response:
        """Send one request, failing over between the URLs (module docstring).

        ``resend_ok``: whether the request may be sent again to another URL
        after it may have reached a server; by default true for idempotent
        methods and for requests with an ``Idempotency-Key``."""
        hdrs = dict(headers or {})
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        if resend_ok is None:
            resend_ok = method.upper() in IDEMPOTENT_METHODS or any(
                k.lower() == "idempotency-key" for k in hdrs
            )
        count = len(self.base_urls)
        first = self._current
        error: TransportError | None = None
        for attempt in range(count):
            index = (first + attempt) % count
            url = self.base_urls[index] + path
            try:
                resp = self._http.request(
                    method,
                    url,
                    json=json,
                    params=clean,
                    headers=hdrs,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.HTTPError as exc:
                error = from_httpx(exc, url)
                movable = isinstance(exc, _NOT_SENT) or (resend_ok and isinstance(exc, _MAYBE_SENT))
                if count > 1 and isinstance(exc, (*_NOT_SENT, *_MAYBE_SENT)):
                    self._current = (index + 1) % count  # the next request starts elsewhere
                if not movable or attempt == count - 1:
                    order = [self.base_urls[(first + i) % count] for i in range(attempt + 1)]
                    raise self._tried(error, tuple(order)) from exc
                continue
            self._current = index
            if resp.status_code >= 400:
                raise from_response(resp)
            return resp
        raise AssertionError("unreachable") from error  # pragma: no cover - loop returns or raises

    def _tried(self, error: TransportError, tried: tuple[str, ...]) -> TransportError:
        """The last URL's error, naming every URL tried when there were several."""
        if len(tried) < 2:
            return error
        return type(error)(
            f"{error.detail} (tried {len(tried)} control-plane URLs: {', '.join(tried)})",
            url=error.url,
            reason=error.reason,
            tried=tried,
        )

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()
