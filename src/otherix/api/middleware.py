"""ASGI middleware: request ids, the body-size cap, and Prometheus metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming and long-poll requests are
not buffered and the cap is enforced while the body arrives.

Pool gauges (issue 16): ``Metrics.pools_from(read)`` registers a collector
that calls ``read`` at each scrape (``PoolService.gauge_samples``: one store
query) and shows, per pool instance (labels ``pool``, ``node``),
``otherix_pool_{capacity,available,vm_disk,provisioned,cache,scratch}_bytes``
and ``otherix_pool_pressure`` (1 under disk pressure, else 0). A gauge the
instance has no number for (never reported, not measured) has no sample. A
store that does not answer gives a scrape without pool samples (and a
warning), never a failed ``/metrics``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otherix.errors import Internal, OtherixError, ValidationFailed

log = logging.getLogger("otherix.api")


class BodyTooLarge(Exception):
    pass


#: (pool, node, {gauge: value}) per pool instance; gauges are the keys of ``POOL_GAUGES``
PoolSamples = Callable[[], Iterable[tuple[str, str, Mapping[str, float]]]]

POOL_GAUGES: dict[str, str] = {
    "capacity_bytes": "Filesystem capacity of the pool, bytes",
    "available_bytes": "Bytes available on the pool's filesystem",
    "vm_disk_bytes": "Bytes the VM disks on the pool take (allocated)",
    "provisioned_bytes": "Virtual size of the VM disks on the pool, bytes",
    "cache_bytes": "Bytes the pool's image cache takes (allocated)",
    "scratch_bytes": "Bytes the pool's scratch area takes (allocated)",
    "pressure": "1 while the pool is under disk pressure, else 0",
}


class _PoolCollector(Collector):
    def __init__(self, read: PoolSamples) -> None:
        self._read = read

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            key: GaugeMetricFamily(f"otherix_pool_{key}", text, labels=["pool", "node"])
            for key, text in POOL_GAUGES.items()
        }

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families().values())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        try:
            samples = list(self._read())
        except Exception as exc:  # the store is down: the process metrics still answer
            log.warning("pool gauges not read: %s", exc)
            samples = []
        for pool, node, values in samples:
            for key, value in values.items():
                families[key].add_metric([pool, node], value)
        return iter(families.values())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "otherix_http_requests_total",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "otherix_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30),
            registry=self.registry,
        )
        self.watch_waiters = Gauge(
            "otherix_watch_waiters",
            "Agent long-poll watches parked on this replica right now",
            registry=self.registry,
        )

    def pools_from(self, read: PoolSamples) -> None:
        """Show the pool gauges, read by ``read`` at each scrape (module docstring)."""
        self.registry.register(_PoolCollector(read))


def _too_large(limit: int) -> list[Message]:
    return answer(
        ValidationFailed(f"request body too large (max {limit} bytes)", {"max_bytes": limit})
    )


def answer(exc: OtherixError) -> list[Message]:
    body = json.dumps(exc.envelope()).encode()
    return [
        {
            "type": "http.response.start",
            "status": exc.http_status,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self.max_body = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        rid = rid or f"{self._id_prefix}-{next(self._ids):x}"
        scope.setdefault("state", {})["request_id"] = rid
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            for msg in _too_large(self.max_body):
                await send(msg)
            return
        received = 0
        status_holder: dict[str, Any] = {"status": 500, "started": False}

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status_holder["status"] = msg["status"]
                status_holder["started"] = True
                msg.setdefault("headers", [])
                msg["headers"] = [*msg["headers"], (b"x-request-id", rid.encode())]
            await send(msg)

        start = time.perf_counter()
        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not status_holder["started"]:
                for msg in _too_large(self.max_body):
                    await tracking_send(msg)
        except Exception:
            # Answer the 500 here rather than letting it reach the server: a
            # re-raised exception makes uvicorn drop the keep-alive connection,
            # and the client's next request on it fails with a reset.
            if status_holder["started"]:
                raise
            log.exception("unexpected error (request %s)", rid)
            for msg in answer(Internal("internal error", {"request_id": rid})):
                await tracking_send(msg)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "<unmatched>")
            method = scope.get("method", "?")
            self.metrics.requests.labels(method, path, str(status_holder["status"])).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)
