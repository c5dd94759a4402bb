"""``otherix.client.base``: failover between control-plane URLs, over real sockets.

The replicas here are real listeners on loopback: a counting HTTP server
(``Replica``), a port nobody listens on (connection refused), a server that
accepts and never answers (a hung replica: timeouts), and one that reads the
request and closes the connection without an answer (a replica killed
mid-request).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from otherix.client.agent import AgentClient
from otherix.client.base import HttpClient
from otherix.client.errors import ApiError, ConnectionRefused, RequestFailed, RequestTimedOut
from otherix.models.heartbeat import HeartbeatReport

TIMEOUT = 0.5


class Replica:
    """An HTTP server that answers every request with ``status`` and counts them."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.requests.append((self.command, self.path.split("?")[0]))
                body = json.dumps(
                    {"ok": True}
                    if outer.status < 400
                    else {"error": {"code": "store_unavailable", "message": "down"}}
                ).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's names

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Silent:
    """Accepts connections and reads, never answers (a hung replica). With
    ``cut`` it closes each connection once the request arrived (a replica
    killed mid-request)."""

    def __init__(self, *, cut: bool = False) -> None:
        self.cut = cut
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.cut:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.listener.close()
        for conn in self.held:
            conn.close()


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: connecting is refused


@pytest.fixture
def live() -> Iterator[Replica]:
    replica = Replica()
    yield replica
    replica.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


def test_a_refused_url_moves_on_and_the_client_stays_on_the_one_that_answers(live):
    dead = refused_url()
    with HttpClient([dead, live.url], timeout=TIMEOUT) as client:
        assert client.json("POST", "/v1/x", json={}) == {"ok": True}  # never sent: any method
        assert client.base_url == live.url
        client.json("GET", "/v1/y")
    assert live.requests == [("POST", "/v1/x"), ("GET", "/v1/y")]


def test_a_hung_replica_is_left_after_a_timeout_and_not_tried_again(live, silent):
    with HttpClient([silent.url, live.url], timeout=TIMEOUT) as client:
        client.json("GET", "/v1/a")
        assert silent.accepted == 1
        client.json("GET", "/v1/b")
        client.json("DELETE", "/v1/c")
    assert silent.accepted == 1  # sticky: the working replica stays current
    assert live.requests == [("GET", "/v1/a"), ("GET", "/v1/b"), ("DELETE", "/v1/c")]


def test_a_post_that_may_have_arrived_is_not_sent_twice(live, silent):
    with HttpClient([silent.url, live.url], timeout=TIMEOUT) as client:
        with pytest.raises(RequestTimedOut):
            client.json("POST", "/v1/storage-pools", json={"name": "once"})
        assert live.requests == []  # not resent: it may have been created on the hung one
        client.json("POST", "/v1/storage-pools", json={"name": "next"})  # next one moves on
    assert live.requests == [("POST", "/v1/storage-pools")]


def test_a_post_with_an_idempotency_key_or_marked_resendable_moves_on(live, silent):
    with HttpClient([silent.url, live.url], timeout=TIMEOUT) as client:
        client.json("POST", "/v1/p", json={}, headers={"Idempotency-Key": "k1"})
    report = HeartbeatReport(
        agent_version="t", architecture="amd64", revision=0, digest="0" * 64, pools=None
    )
    with (
        AgentClient([silent.url, live.url], "otxn_x", timeout=TIMEOUT) as agent,
        contextlib.suppress(ValueError),  # the stub's body is not a HeartbeatReply
    ):
        agent.heartbeat("n1", report)
    assert live.requests == [("POST", "/v1/p"), ("POST", "/v1/nodes/n1/heartbeat")]


def test_a_connection_cut_mid_request_moves_a_get_on(live):
    cut = Silent(cut=True)
    try:
        with HttpClient([cut.url, live.url], timeout=2) as client:
            assert client.json("GET", "/v1/nodes/n1/watch") == {"ok": True}
        with HttpClient([cut.url, live.url], timeout=2) as client, pytest.raises(RequestFailed):
            client.json("POST", "/v1/z", json={})  # a POST cut after sending is not resent
    finally:
        cut.close()
    assert live.requests == [("GET", "/v1/nodes/n1/watch")]


def test_an_http_error_answer_is_never_a_reason_to_move(live):
    failing = Replica(status=503)
    try:
        with HttpClient([failing.url, live.url], timeout=TIMEOUT) as client:
            with pytest.raises(ApiError) as err:
                client.json("GET", "/v1/x")
            assert err.value.status == 503
            assert client.base_url == failing.url
    finally:
        failing.close()
    assert live.requests == []


def test_all_urls_down_names_every_url_and_one_url_behaves_as_before():
    a, b = refused_url(), refused_url()
    with HttpClient([a, b], timeout=TIMEOUT) as client, pytest.raises(ConnectionRefused) as err:
        client.json("GET", "/v1/x")
    assert f"(tried 2 control-plane URLs: {a}, {b})" in str(err.value)
    with HttpClient(a, timeout=TIMEOUT) as client, pytest.raises(ConnectionRefused) as err:
        client.json("GET", "/v1/x")
    assert str(err.value).startswith(f"connection_refused: {a}/v1/x: ")
    assert "tried" not in str(err.value)


def test_urls_are_cleaned_and_deduplicated(live):
    with HttpClient([live.url + "/", live.url], timeout=TIMEOUT) as client:
        assert client.base_urls == (live.url,)
    with pytest.raises(ValueError, match="at least one"):
        HttpClient([])
