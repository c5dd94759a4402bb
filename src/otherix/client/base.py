"""``HttpClient``: base URL, bearer token, timeouts, JSON in and out."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from otherix import __version__
from otherix.client.errors import from_httpx, from_response

DEFAULT_TIMEOUT = 30.0


class HttpClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
        trust_env: bool = True,
    ) -> None:
        """``trust_env``: honour ``SSL_CERT_FILE``/``SSL_CERT_DIR`` and proxy
        variables, as users of a command-line tool expect; the agent turns it
        off and passes its own transport (``control_plane.ca_file``)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"User-Agent": f"otherix/{__version__}"}
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            verify=verify,
            headers=headers,
            trust_env=trust_env,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
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
    ) -> httpx.Response:
        hdrs = dict(headers or {})
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(
                method,
                path,
                json=json,
                params=clean,
                headers=hdrs,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise from_httpx(exc, self.base_url + path) from exc
        if resp.status_code >= 400:
            raise from_response(resp)
        return resp

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()
