"""Generic CLI renderers: formats, tables, JSON/YAML, sizes, ages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from otherix.cli.output import (
    age,
    check_format,
    human_bytes,
    parse_timestamp,
    render_json,
    render_table,
    render_yaml,
    render_yaml_stream,
)

NOW = datetime(2025, 6, 10, 12, 0, 0, tzinfo=UTC)


def test_check_format_accepts_allowed_value():
    assert check_format("json", ["text", "json"]) == "json"


def test_check_format_lists_allowed_in_given_order():
    with pytest.raises(
        ValueError, match=r"^--output: unknown format \"x\" \(text, json, table, yaml\)$"
    ):
        check_format("x", ["text", "json", "table", "yaml"])


def test_check_format_cluster_commands_list_only_text_json():
    with pytest.raises(ValueError) as info:
        check_format("yaml", ("text", "json"))
    assert str(info.value) == '--output: unknown format "yaml" (text, json)'


def test_render_table_brief_example():
    headers = ["NAME", "NODE", "TYPE", "PATH", "AVAILABLE", "STATUS", "DEFAULT", "AGE"]
    path = "/var/lib/otherix/pools/default"
    rows = [
        ["default", "node-a", "local_dir", path, "80.1GiB", "ready", "yes", "2d"],
        ["default", "node-b", "local_dir", path, "79.4GiB", "ready", "yes", "2d"],
    ]
    assert render_table(headers, rows) == (
        "NAME     NODE    TYPE       PATH                            AVAILABLE  STATUS  DEFAULT  AGE\n"  # noqa: E501
        "default  node-a  local_dir  /var/lib/otherix/pools/default  80.1GiB    ready   yes      2d\n"  # noqa: E501
        "default  node-b  local_dir  /var/lib/otherix/pools/default  79.4GiB    ready   yes      2d\n"  # noqa: E501
    )


def test_render_table_strips_trailing_spaces_for_empty_last_cells():
    out = render_table(["A", "DEFAULT"], [["x", ""], ["longer", "yes"]])
    assert out == "A       DEFAULT\nx\nlonger  yes\n"
    assert all(line == line.rstrip() for line in out.splitlines())


def test_render_table_header_only():
    assert render_table(["NAME", "AGE"], []) == "NAME  AGE\n"


def test_render_table_pads_short_rows():
    assert render_table(["A", "B", "C"], [["1"]]) == "A  B  C\n1\n"


def test_render_json_indent_unicode_and_null():
    out = render_json({"name": "café", "reported_at": None, "images": []})
    assert out == '{\n  "name": "café",\n  "reported_at": null,\n  "images": []\n}\n'
    assert json.loads(out) == {"name": "café", "reported_at": None, "images": []}


def test_render_json_null_document():
    assert render_json(None) == "null\n"


def test_render_yaml_keeps_insertion_order_and_block_style():
    out = render_yaml(
        {"kind": "StoragePool", "apiVersion": "otherix/v1", "spec": {"nodeList": ["b", "a"]}}
    )
    assert out == "kind: StoragePool\napiVersion: otherix/v1\nspec:\n  nodeList:\n  - b\n  - a\n"


def test_render_yaml_scalar_has_no_document_end_marker():
    assert render_yaml(None) == "null\n"


def test_render_yaml_stream_separates_documents():
    out = render_yaml_stream([{"a": 1}, {"b": 2}])
    assert out == "a: 1\n---\nb: 2\n"
    assert list(yaml.safe_load_all(out)) == [{"a": 1}, {"b": 2}]


def test_render_yaml_stream_empty():
    assert render_yaml_stream([]) == ""


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (None, "-"),
        (0, "0B"),
        (1, "1B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (1536, "1.5KiB"),
        (1024**2 - 1, "1024.0KiB"),
        (1024**2, "1.0MiB"),
        (612 * 1024**2, "612.0MiB"),
        (int(80.1 * 1024**3), "80.1GiB"),
        (1024**3, "1.0GiB"),
        (1024**4, "1.0TiB"),
        (int(2.5 * 1024**4), "2.5TiB"),
        (1024**5, "1.0PiB"),
        (3 * 1024**6, "3072.0PiB"),
    ],
)
def test_human_bytes(n, expected):
    assert human_bytes(n) == expected


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=59), "59s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(minutes=59, seconds=59), "59m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=23, minutes=59), "23h"),
        (timedelta(days=1), "1d"),
        (timedelta(days=2, hours=23), "2d"),
        (timedelta(days=400), "400d"),
        (timedelta(seconds=-30), "0s"),
        (timedelta(days=-3), "0s"),
    ],
)
def test_age_buckets(delta, expected):
    ts = (NOW - delta).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert age(ts, NOW) == expected


@pytest.mark.parametrize(
    "ts",
    [
        "2025-06-10T11:58:00Z",
        "2025-06-10T11:58:00z",
        "2025-06-10t11:58:00Z",
        "2025-06-10T11:57:30.5Z",
        "2025-06-10T11:57:30.123456Z",
        "2025-06-10T11:57:30.123456789Z",
        "2025-06-10T13:58:00+02:00",
        "2025-06-10T13:57:30.999999999+02:00",
        "2025-06-10T06:58:00-05:00",
        "2025-06-10T11:58:00",
        "2025-06-10 11:58:00Z",
    ],
)
def test_age_parses_rfc3339_variants(ts):
    assert age(ts, NOW) == "2m"


@pytest.mark.parametrize(
    "ts",
    [None, "", "yesterday", "2025-13-01T00:00:00Z", "2025-06-10", "2025-06-10T11:58Z", "12345"],
)
def test_age_unparsable_is_dash(ts):
    assert age(ts, NOW) == "-"


def test_age_naive_now_is_utc():
    assert age("2025-06-10T11:00:00Z", NOW.replace(tzinfo=None)) == "1h"


def test_parse_timestamp_truncates_nanoseconds():
    parsed = parse_timestamp("2025-06-10T11:58:00.123456789Z")
    assert parsed == datetime(2025, 6, 10, 11, 58, 0, 123456, tzinfo=UTC)
