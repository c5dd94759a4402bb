"""The ``vm.create`` line (otherix.agent.vmline): the pure choice as a table, the
source key, and the line's blocking behaviour with real threads."""

from __future__ import annotations

import threading

import pytest

from otherix.agent.vmline import CreateLine, Waiting, pick, source_of

A, B = "http://a:80", "http://b:80"


@pytest.mark.parametrize(
    ("waiting", "running", "now", "expected"),
    [
        pytest.param([], {}, 0.0, (None, None), id="empty"),
        pytest.param([(A, 0.0), (B, 0.0)], {}, 0.0, (0, None), id="oldest first"),
        pytest.param([(A, 0.0), (B, 0.0)], {A: 2}, 0.0, (1, None), id="busy source skipped"),
        pytest.param([(A, 0.0), (A, 0.0)], {A: 2}, 0.0, (None, None), id="only a slot frees it"),
        pytest.param([(A, 0.0)], {A: 1}, 0.0, (0, None), id="a slot left"),
        pytest.param([(A, 5.0), (B, 3.0)], {}, 1.0, (None, 2.0), id="backoff: the soonest"),
        pytest.param([(A, 5.0), (B, 0.0)], {}, 1.0, (1, None), id="a ready job passes a backoff"),
        pytest.param([(A, 5.0)], {A: 2}, 1.0, (None, None), id="backoff behind a busy source"),
        pytest.param([(None, 0.0)], {A: 2, B: 2}, 0.0, (0, None), id="no slot needed"),
    ],
)
def test_pick(waiting, running, now, expected):
    entries = [Waiting(i, source, not_before) for i, (source, not_before) in enumerate(waiting)]
    assert pick(entries, running, 2, now) == expected


@pytest.mark.parametrize(
    ("url", "source"),
    [
        ("http://Images.Example/a/b.img", "http://images.example:80"),
        ("https://images.example/b.img", "https://images.example:443"),
        ("https://user:secret@images.example:8443/b.img", "https://images.example:8443"),
        ("http://[fe80::1]:8080/x.img", "http://[fe80::1]:8080"),
        ("ftp://images.example/x.img", "ftp://images.example/x.img"),  # refused anyway
    ],
)
def test_source_of(url, source):
    assert source_of(url) == source


def test_a_busy_source_waits_without_blocking_another_source():
    line: CreateLine[str] = CreateLine(per_source=1)
    line.put("a1", A)
    line.put("a2", A)
    line.put("b1", B)
    first = line.take()
    assert first is not None
    assert first.item == "a1"
    second = line.take()
    assert second is not None
    assert second.item == "b1"
    got: list[str] = []
    taker = threading.Thread(target=lambda: got.append(line.take().item))  # type: ignore[union-attr]
    taker.start()
    taker.join(0.2)
    assert got == []  # blocked: A is busy, nothing else waits
    line.done(first)
    taker.join(5)
    assert got == ["a2"]
    assert line.running() == {A: 1, B: 1}


def test_release_lets_a_waiting_job_out_at_once():
    line: CreateLine[str] = CreateLine(per_source=1)
    line.put("a1", A)
    running = line.take()
    line.put("a2", A, delay=60.0)
    line.release("a2")
    got = line.take()
    assert got is not None
    assert got.item == "a2"
    assert got.source is None
    assert running is not None
    line.done(got)
    assert line.running() == {A: 1}


def test_close_wakes_every_taker():
    line: CreateLine[str] = CreateLine(per_source=1)
    results: list[object] = []
    takers = [threading.Thread(target=lambda: results.append(line.take())) for _ in range(3)]
    for t in takers:
        t.start()
    line.close()
    for t in takers:
        t.join(5)
    assert results == [None, None, None]
