"""The ~/.otherix/config file and endpoint/token resolution."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from otherix.cli.config import (
    CliConfig,
    ClusterEntry,
    ClusterNotFound,
    ConfigError,
    add_cluster,
    default_config_path,
    load_config,
    remove_cluster,
    resolve,
    save_config,
    use_cluster,
)

DEV = ClusterEntry(
    "dev", "http://localhost:8080", "otx_dev", "11111111-1111-4111-8111-111111111111"
)
PROD = ClusterEntry("prod", "https://prod.example:8443", "otx_prod", None)


def two_clusters(current: str = "dev") -> CliConfig:
    return CliConfig(
        current_cluster=current, clusters=[ClusterEntry(**vars(DEV)), ClusterEntry(**vars(PROD))]
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- file ------------------------------------------------------------------


def test_missing_file_is_empty_config(tmp_path):
    assert load_config(tmp_path / "nope" / "config") == CliConfig(current_cluster="", clusters=[])


def test_empty_file_is_empty_config(tmp_path):
    path = tmp_path / "config"
    path.write_text("")
    assert load_config(path) == CliConfig()


def test_save_load_round_trip_and_layout(tmp_path):
    path = tmp_path / "home" / ".otherix" / "config"
    save_config(path, two_clusters())
    assert path.read_text() == (
        "apiVersion: v1\n"
        "kind: Config\n"
        "current-cluster: dev\n"
        "clusters:\n"
        "  - name: dev\n"
        "    server: http://localhost:8080\n"
        "    token: otx_dev\n"
        "    token-id: 11111111-1111-4111-8111-111111111111\n"
        "  - name: prod\n"
        "    server: https://prod.example:8443\n"
        "    token: otx_prod\n"
    )
    assert load_config(path) == two_clusters()


def test_save_modes_and_no_temp_left(tmp_path):
    path = tmp_path / ".otherix" / "config"
    save_config(path, two_clusters())
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    save_config(path, CliConfig())
    assert mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["config"]
    assert load_config(path) == CliConfig()


def test_save_keeps_existing_directory_mode(tmp_path):
    directory = tmp_path / "cfg"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    save_config(directory / "config", CliConfig())
    assert mode(directory) == 0o755
    assert mode(directory / "config") == 0o600


def test_empty_token_id_is_omitted(tmp_path):
    path = tmp_path / "config"
    save_config(path, CliConfig("a", [ClusterEntry("a", "http://a", "otx_a", "")]))
    assert "token-id" not in path.read_text()
    assert load_config(path).clusters[0].token_id is None


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("clusters: [unclosed\n", "malformed YAML"),
        ("- just\n- a list\n", "mapping at the top level"),
        ("clusters: {dev: {}}\n", "'clusters' must be a list"),
        ("clusters:\n  - 42\n", "clusters[0]: expected a mapping"),
        ("clusters:\n  - server: http://x\n", "missing 'name'"),
        ("clusters:\n  - name: ''\n", "'name' must not be empty"),
        ("clusters:\n  - name: a\n    server: [x]\n", "'server' must be a string"),
        ("clusters:\n  - name: a\n  - name: a\n", 'duplicate cluster name "a"'),
        ("current-cluster: 7\n", "'current-cluster' must be a string"),
        ("apiVersion: v2\n", "apiVersion must be 'v1'"),
        ("kind: Other\n", "kind must be 'Config'"),
    ],
)
def test_bad_file_is_config_error_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "config"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_default_config_path():
    assert default_config_path({"OTHERIX_CONFIG": "/etc/otx.yaml", "HOME": "/h"}) == Path(
        "/etc/otx.yaml"
    )
    assert default_config_path({"HOME": "/home/ops"}) == Path("/home/ops/.otherix/config")
    assert default_config_path({"OTHERIX_CONFIG": "", "HOME": "/h"}) == Path("/h/.otherix/config")
    assert default_config_path({}) == Path.home() / ".otherix" / "config"


# --- editing ---------------------------------------------------------------


def test_add_cluster_appends_and_sets_current():
    cfg = CliConfig()
    add_cluster(cfg, DEV, force=False, set_current=True)
    add_cluster(cfg, PROD, force=False, set_current=False)
    assert cfg.current_cluster == "dev"
    assert [c.name for c in cfg.clusters] == ["dev", "prod"]


def test_add_existing_cluster_needs_force():
    cfg = two_clusters()
    with pytest.raises(ConfigError) as info:
        add_cluster(
            cfg, ClusterEntry("dev", "http://new", "otx_new"), force=False, set_current=True
        )
    assert str(info.value) == 'cluster "dev" already exists (use --force to replace it)'
    assert cfg == two_clusters()


def test_add_with_force_replaces_in_place():
    cfg = two_clusters()
    add_cluster(cfg, ClusterEntry("dev", "http://new", "otx_new"), force=True, set_current=False)
    assert cfg.clusters[0] == ClusterEntry("dev", "http://new", "otx_new", None)
    assert len(cfg.clusters) == 2


def test_add_empty_name_rejected():
    with pytest.raises(ConfigError):
        add_cluster(CliConfig(), ClusterEntry("", "http://x", "t"), force=False, set_current=True)


def test_remove_current_picks_alphabetically_first():
    cfg = CliConfig(
        "mid",
        [
            ClusterEntry("zeta", "http://z", "t"),
            ClusterEntry("mid", "http://m", "t"),
            ClusterEntry("alpha", "http://a", "t"),
        ],
    )
    remove_cluster(cfg, "mid")
    assert cfg.current_cluster == "alpha"
    assert [c.name for c in cfg.clusters] == ["zeta", "alpha"]


def test_remove_non_current_keeps_current():
    cfg = two_clusters("dev")
    remove_cluster(cfg, "prod")
    assert cfg.current_cluster == "dev"


def test_remove_last_leaves_no_current():
    cfg = CliConfig("dev", [ClusterEntry(**vars(DEV))])
    remove_cluster(cfg, "dev")
    assert cfg == CliConfig("", [])


def test_remove_and_use_unknown_cluster():
    with pytest.raises(ClusterNotFound, match='cluster "nope" not found'):
        remove_cluster(two_clusters(), "nope")
    with pytest.raises(ClusterNotFound, match='cluster "nope" not found'):
        use_cluster(two_clusters(), "nope")


def test_use_cluster():
    cfg = two_clusters("dev")
    use_cluster(cfg, "prod")
    assert cfg.current_cluster == "prod"


# --- resolve ---------------------------------------------------------------

ENV = {"OTHERIX_SERVER": "http://env:8080", "OTHERIX_API_TOKEN": "otx_env"}


def test_resolve_flags_win_over_everything():
    r = resolve("http://flag", "otx_flag", None, ENV, two_clusters())
    assert (r.endpoint, r.endpoint_source, r.token, r.token_source) == (
        "http://flag",
        "flag",
        "otx_flag",
        "flag",
    )
    assert r.cluster_name == "dev"


def test_resolve_env_beats_config():
    r = resolve(None, None, None, ENV, two_clusters())
    assert (r.endpoint, r.endpoint_source, r.token, r.token_source) == (
        "http://env:8080",
        "env",
        "otx_env",
        "env",
    )


def test_resolve_current_cluster_entry():
    r = resolve(None, None, None, {}, two_clusters("dev"))
    assert (r.endpoint, r.endpoint_source) == ("http://localhost:8080", "config:dev")
    assert (r.token, r.token_source, r.cluster_name) == ("otx_dev", "config:dev", "dev")


def test_resolve_cluster_flag_beats_current():
    r = resolve(None, None, "prod", {}, two_clusters("dev"))
    assert (r.endpoint, r.endpoint_source) == ("https://prod.example:8443", "config:prod")
    assert (r.token, r.token_source, r.cluster_name) == ("otx_prod", "config:prod", "prod")


def test_resolve_env_beats_cluster_flag():
    r = resolve(None, None, "prod", ENV, two_clusters("dev"))
    assert (r.endpoint_source, r.token_source, r.cluster_name) == ("env", "env", "prod")


def test_resolve_mixed_sources():
    r = resolve("http://flag", None, None, {"OTHERIX_API_TOKEN": "otx_env"}, two_clusters())
    assert (r.endpoint_source, r.token_source) == ("flag", "env")
    r = resolve(None, "otx_flag", None, {}, two_clusters("prod"))
    assert (r.endpoint_source, r.token, r.token_source) == ("config:prod", "otx_flag", "flag")


def test_resolve_cluster_flag_has_no_fallback_to_current():
    cfg = CliConfig("dev", [ClusterEntry(**vars(DEV)), ClusterEntry("bare", "http://bare", "")])
    r = resolve(None, None, "bare", {}, cfg)
    assert (r.endpoint, r.token, r.token_source) == ("http://bare", None, None)
    cfg = CliConfig("dev", [ClusterEntry(**vars(DEV)), ClusterEntry("noserver", "", "otx_x")])
    with pytest.raises(ConfigError) as info:
        resolve(None, None, "noserver", {}, cfg)
    assert "no control-plane endpoint" in str(info.value)


def test_resolve_unknown_cluster_flag():
    with pytest.raises(ClusterNotFound, match='cluster "nope" not found'):
        resolve("http://flag", "otx_flag", "nope", {}, two_clusters())


def test_resolve_missing_endpoint():
    with pytest.raises(ConfigError) as info:
        resolve(None, "otx_flag", None, {"OTHERIX_API_TOKEN": "otx_env"}, CliConfig())
    assert str(info.value) == (
        "no control-plane endpoint: pass --endpoint, set OTHERIX_SERVER, "
        "or run 'otherix config add cluster'"
    )
    assert not isinstance(info.value, ClusterNotFound)


def test_resolve_missing_token_is_not_an_error():
    r = resolve("http://flag", None, None, {}, CliConfig())
    assert (r.endpoint, r.endpoint_source, r.token, r.token_source, r.cluster_name) == (
        "http://flag",
        "flag",
        None,
        None,
        None,
    )


def test_resolve_empty_values_count_as_unset():
    r = resolve("", "", None, {"OTHERIX_SERVER": "", "OTHERIX_API_TOKEN": ""}, two_clusters())
    assert (r.endpoint_source, r.token_source) == ("config:dev", "config:dev")


def test_resolve_dangling_current_cluster():
    cfg = CliConfig("gone", [ClusterEntry(**vars(DEV))])
    with pytest.raises(ClusterNotFound, match='current cluster "gone" not found'):
        resolve(None, None, None, {}, cfg)
    r = resolve(None, None, None, ENV, cfg)
    assert (r.endpoint_source, r.cluster_name) == ("env", None)
