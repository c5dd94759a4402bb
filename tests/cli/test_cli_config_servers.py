"""A CLI context with several control-plane URLs (``servers:``), and old
config files with one ``server`` that must keep working."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otherix.cli.config import (
    CliConfig,
    ClusterEntry,
    ConfigError,
    load_config,
    resolve,
    save_config,
)

OLD_FILE = """\
apiVersion: v1
kind: Config
current-cluster: lab
clusters:
  - name: lab
    server: http://cp-a:8080
    token: otx_lab
"""


def test_an_old_file_with_one_server_is_a_list_of_one(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(OLD_FILE)
    cfg = load_config(path)
    assert cfg.clusters == [ClusterEntry("lab", "http://cp-a:8080", "otx_lab")]
    assert cfg.clusters[0].urls == ["http://cp-a:8080"]
    r = resolve(None, None, None, {}, cfg)
    assert (r.endpoint, r.urls) == ("http://cp-a:8080", ("http://cp-a:8080",))
    save_config(path, cfg)
    assert path.read_text() == OLD_FILE  # unchanged on disk: no servers key for one URL


def test_servers_are_saved_with_server_as_the_first_and_win_on_load(tmp_path: Path) -> None:
    path = tmp_path / "config"
    entry = ClusterEntry(
        "prod", "http://cp-a:8080", "otx_p", "tid", servers=["http://cp-a:8080", "http://cp-b:8080"]
    )
    save_config(path, CliConfig("prod", [entry]))
    raw = yaml.safe_load(path.read_text())["clusters"][0]
    assert raw["server"] == "http://cp-a:8080"  # what an older CLI reads
    assert raw["servers"] == ["http://cp-a:8080", "http://cp-b:8080"]
    cfg = load_config(path)
    assert cfg.clusters == [entry]
    r = resolve(None, None, None, {}, cfg)
    assert r.urls == ("http://cp-a:8080", "http://cp-b:8080")
    assert (r.endpoint, r.endpoint_source, r.token) == ("http://cp-a:8080", "config:prod", "otx_p")

    # hand-edited: servers given, server stale or missing -> servers win
    raw.pop("server")
    path.write_text(yaml.safe_dump({"current-cluster": "prod", "clusters": [raw]}))
    assert load_config(path).clusters[0].urls == ["http://cp-a:8080", "http://cp-b:8080"]
    assert load_config(path).clusters[0].server == "http://cp-a:8080"


def test_a_flag_or_env_endpoint_is_one_url(tmp_path: Path) -> None:
    entry = ClusterEntry("p", "http://a", "otx_p", servers=["http://a", "http://b"])
    cfg = CliConfig("p", [entry])
    assert resolve("http://c", None, None, {}, cfg).urls == ("http://c",)
    assert resolve(None, None, None, {"OTHERIX_SERVER": "http://d"}, cfg).urls == ("http://d",)


@pytest.mark.parametrize("servers", ["http://a", [1, 2], ["http://a", ""]])
def test_bad_servers_name_the_entry(tmp_path: Path, servers: object) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({"clusters": [{"name": "x", "servers": servers}]}))
    with pytest.raises(ConfigError, match=r"clusters\[0\]: 'servers' must be a list of URLs"):
        load_config(path)
