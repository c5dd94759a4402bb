"""The progress pieces (``otherix.cli.progress``) and VM views, without a server."""

from __future__ import annotations

import io
import os

import click
import pytest

from otherix.cli.context import CliContext
from otherix.cli.progress import RateMeter, StatusLine, live_output, parse_timeout, task_line
from otherix.cli.views.vms import phase_text, vm_manifest

MIB = 1 << 20


def test_rate_over_the_window_and_restarts():
    meter = RateMeter(window=5.0)
    assert meter.feed(0.0, 0, "downloading") is None
    assert meter.feed(1.0, 10 * MIB, "downloading") == 10 * MIB
    assert meter.feed(2.0, 30 * MIB, "downloading") == 15 * MIB
    # samples older than the window drop out: 10 s later only the recent pace counts
    meter.feed(6.0, 70 * MIB, "downloading")
    assert meter.feed(12.0, 130 * MIB, "downloading") == pytest.approx(10 * MIB)
    assert meter.feed(13.0, 0, "copying") is None  # a new phase starts over
    assert meter.feed(14.0, 4 * MIB, "copying") == 4 * MIB
    assert meter.feed(15.0, MIB, "copying") is None  # went backwards: a retry
    assert meter.feed(15.0, 2 * MIB, "copying") is None  # no time passed


@pytest.mark.parametrize(
    ("task", "label", "rate", "line"),
    [
        (
            {"status": "pending"},
            "ubuntu.img",
            None,
            "queued ubuntu.img: waiting for the node's agent",
        ),
        ({"status": "pending"}, "", None, "queued: waiting for the node's agent"),
        ({"status": "running", "progress": 40, "result": None}, "", None, "running  40%"),
        (
            {"status": "running", "progress": 70, "result": {"phase": "converting"}},
            "ubuntu.img",
            None,
            "converting ubuntu.img  70%",
        ),
        (
            {
                "status": "running",
                "progress": 95,
                "result": {"phase": "clone", "bytes_done": MIB, "bytes_total": 2 * MIB},
            },
            "a.img",
            None,
            "cloning a.img  1.0MiB / 2.0MiB",
        ),
        (
            {
                "status": "running",
                "result": {
                    "phase": "downloading",
                    "bytes_done": 312 * MIB,
                    "bytes_total": 612 * MIB,
                },
            },
            "ubuntu.img",
            48.2 * MIB,
            "downloading ubuntu.img  312.0MiB / 612.0MiB  48.2MiB/s",
        ),
        (
            {"status": "running", "result": {"bytes_done": 5, "bytes_total": None}},
            "",
            0.0,
            "running  5B  0B/s",
        ),
        (
            {"status": "running", "progress": 3, "result": {"bytes_done": True}},
            "",
            None,
            "running  3%",  # not a byte count
        ),
    ],
)
def test_task_line(task, label, rate, line):
    assert task_line(task, label, rate) == line


def capture() -> tuple[CliContext, list[str]]:
    written: list[str] = []
    return CliContext(err=written.append), written


def test_status_line_rewrites_in_place_and_pads_over_longer_text():
    ctx, written = capture()
    line = StatusLine(ctx, live=True)
    line.show("downloading a.img  1.0MiB")
    line.show("downloading a.img  1.0MiB")  # unchanged: nothing written
    line.show("done")
    line.note("vm web-1 pending: why")
    line.clear()
    line.clear()
    assert written == [
        "\rdownloading a.img  1.0MiB",
        "\rdone" + " " * 21,
        "\r    \r",
        "vm web-1 pending: why\n",
        "\rdone",
        "\r    \r",
    ]


def test_status_line_is_cut_to_the_terminal_width(monkeypatch):
    size = os.terminal_size((30, 24))
    monkeypatch.setattr("otherix.cli.progress.shutil.get_terminal_size", lambda fallback: size)
    ctx, written = capture()
    StatusLine(ctx, live=True).show("x" * 100)
    assert written == ["\r" + "x" * 29]


def test_status_line_when_not_live_only_notes():
    ctx, written = capture()
    line = StatusLine(ctx, live=False)
    line.show("progress")
    line.note("a reason")
    line.clear()
    assert written == ["a reason\n"]


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("out", "err", "live"), [(True, True, True), (False, True, False), (True, False, False)]
)
def test_live_output_needs_both_streams_on_a_terminal(monkeypatch, out, err, live):
    monkeypatch.setattr("otherix.cli.progress.sys.stdout", Stream(out))
    monkeypatch.setattr("otherix.cli.progress.sys.stderr", Stream(err))
    assert live_output(CliContext()) is live
    assert live_output(CliContext(is_tty=True)) is True  # an explicit setting decides


def test_parse_timeout():
    assert parse_timeout("--timeout", "5m") == 300
    assert parse_timeout("--timeout", "1m30s") == 90
    with pytest.raises(click.UsageError, match=r"^--timeout: must be more than 0s$"):
        parse_timeout("--timeout", "0s")
    with pytest.raises(click.UsageError, match=r'^--wait-timeout: invalid duration "x"'):
        parse_timeout("--wait-timeout", "x")


@pytest.mark.parametrize(
    ("status", "text"),
    [
        ({"phase": "stopped"}, "stopped (disk ready)"),
        ({"phase": "pending"}, "pending"),
        (
            {"phase": "pending", "reason": "node_pressure", "message": "m"},
            "pending (node_pressure: m)",
        ),
        ({"phase": "error", "reason": "pool_full"}, "error (pool_full)"),
        ({"phase": "creating", "reason": "ignored"}, "creating"),
        ({}, "unknown"),
    ],
)
def test_phase_text(status, text):
    assert phase_text({"status": status}) == text


def test_manifest_leaves_out_empty_fields_and_never_ids_or_status():
    vm = {
        "id": "i",
        "name": "web-1",
        "owner": "admin",
        "image_url": "https://x/a.img",
        "image_sha256": None,
        "pull_policy": "always",
        "architecture": "arm64",
        "vcpus": 1,
        "memory_mb": 512,
        "format": "raw",
        "disk_gib": 0,
        "pool": "fast",
        "pool_id": "p",
        "node": "node-a",
        "node_hint": None,
        "status": {"phase": "stopped"},
        "created_at": "t",
    }
    assert vm_manifest(vm) == {
        "apiVersion": "otherix/v1",
        "kind": "VM",
        "metadata": {"name": "web-1"},
        "spec": {
            "imageURL": "https://x/a.img",
            "imagePullPolicy": "always",
            "arch": "arm64",
            "vcpus": 1,
            "memoryMB": 512,
            "format": "raw",
            "pool": "fast",
        },
    }
