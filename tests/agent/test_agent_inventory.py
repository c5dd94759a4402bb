"""The image cache in pool reports (otherix.agent.report) and the ``images``/``tasks``
settings (otherix.agent.settings): inventory, digest, scratch sweep, pool lookup."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, ImageCacheSettings, KeyedLocks
from otherix.agent.pools import PoolReconciler, PoolUnknownError
from otherix.agent.report import PoolState
from otherix.agent.settings import AgentSettings, parse_bytes
from otherix.config import ConfigError, load_config
from otherix.models.heartbeat import DeclaredPool

POOL = "/var/lib/otherix/pools/p1"


def declared(path: str = POOL, name: str = "p1") -> DeclaredPool:
    return DeclaredPool(name=name, type="local_dir", path=path)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return tmp_path / "host"


@pytest.fixture
def state(host: Path) -> PoolState:
    protected = ProtectedRoots()  # shared, as the agent's composition root does
    return PoolState(
        PoolReconciler(protected=protected),
        allowed_prefixes=["/var/lib/otherix/pools/"],
        host_root=host,
        images=ImageCache(locks=KeyedLocks(), protected=protected),
    )


def put_image(root: Path, name: str, data: bytes) -> str:
    """A present cache entry as the cache commits it (no ``.source``: an older agent's)."""
    sha = hashlib.sha256(data).hexdigest()
    (root / "images" / name).write_bytes(data)
    (root / "images" / f"{name}.sha256").write_text(sha)
    return sha


def test_ready_pools_report_their_image_cache(state: PoolState, host: Path) -> None:
    state.reconcile([declared()])
    [report] = state.reports
    assert report.images == []
    empty = state.digest
    root = Path(str(host) + POOL)
    sha = put_image(root, "cirros.img", b"x" * 4096)
    (root / "images" / "partial.img").write_bytes(b"no sidecar: absent")
    assert state.reconcile([declared()])  # the periodic pass re-lists it
    [report] = state.reports
    assert report.images is not None
    assert [(i.name, i.sha256, i.size_bytes, i.format) for i in report.images] == [
        ("cirros.img", sha, 4096, "raw")
    ]
    assert state.digest != empty


def test_refresh_images_changes_the_digest_only_when_the_inventory_changes(
    state: PoolState, host: Path
) -> None:
    state.reconcile([declared()])
    before = state.digest
    assert not state.refresh_images()
    put_image(Path(str(host) + POOL), "a.img", b"a")
    assert state.refresh_images()
    assert state.digest != before
    assert not state.refresh_images()


def test_a_failed_pool_reports_no_inventory(state: PoolState) -> None:
    state.reconcile([declared("/elsewhere/p1")])  # outside the allowlist
    [report] = state.reports
    assert report.reconciliation_status == "failed"
    assert report.images is None


def test_scratch_is_swept_when_a_pool_is_first_registered(state: PoolState, host: Path) -> None:
    root = Path(str(host) + POOL)
    (root / "scratch").mkdir(parents=True)
    (root / "scratch" / "ubuntu.img.0123.tmp").write_bytes(b"left by a killed agent")
    state.reconcile([declared()])
    assert list((root / "scratch").iterdir()) == []
    (root / "scratch" / "later.tmp").write_bytes(b"")
    state.reconcile([declared()])  # registered already: not swept again
    assert [p.name for p in (root / "scratch").iterdir()] == ["later.tmp"]
    state.reconcile([])  # undeclared, then declared again: swept again
    state.reconcile([declared()])
    assert list((root / "scratch").iterdir()) == []


@pytest.mark.security
def test_resolve_finds_only_registered_ready_pools_at_their_path(
    state: PoolState, host: Path
) -> None:
    with pytest.raises(PoolUnknownError, match="not registered"):
        state.resolve("p1", POOL)
    state.reconcile([declared()])
    assert state.resolve("P1", POOL) == Path(str(host) + POOL)
    assert state.resolve("p1", None) == Path(str(host) + POOL)
    with pytest.raises(PoolUnknownError, match="another path"):
        state.resolve("p1", "/var/lib/otherix/pools/p2")


@pytest.mark.security
def test_resolve_refuses_a_failed_pool(host: Path) -> None:
    host.mkdir(parents=True)
    (host / "var").symlink_to(host)  # a symlinked ancestor: the pool fails
    state = PoolState(
        PoolReconciler(protected=ProtectedRoots()),
        allowed_prefixes=["/var/lib/otherix/pools/"],
        host_root=host,
    )
    state.reconcile([declared()])
    with pytest.raises(PoolUnknownError, match="not ready"):
        state.resolve("p1", POOL)


# settings ------------------------------------------------------------------------------


def test_images_and_tasks_settings_default_to_the_contract() -> None:
    s = AgentSettings()
    assert s.images.cache_settings() == ImageCacheSettings()
    assert s.images.allow_loopback_and_link_local is False
    # 4 workers, at most 2 per image source: one slow source never holds them all
    assert (s.tasks.vm_create_workers, s.tasks.vm_create_per_source) == (4, 2)
    assert s.tasks.vm_create_attempts == 3
    assert s.tasks.progress_interval == 0.5
    cache = s.images.cache_settings()
    assert (cache.min_rate_bytes_per_second, cache.min_rate_window) == (64 << 10, 30.0)


def test_rate_floor_settings_from_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "images:\n  min_rate_bytes_per_second: 1MiB\n  min_rate_window: 2m\n"
        "tasks:\n  vm_create_per_source: 1\n"
    )
    s = load_config(AgentSettings, config_file=cfg, env={})
    cache = s.images.cache_settings()
    assert (cache.min_rate_bytes_per_second, cache.min_rate_window) == (1 << 20, 120.0)
    assert s.tasks.vm_create_per_source == 1
    off = load_config(AgentSettings, env={}, overrides={"images.min_rate_bytes_per_second": 0})
    assert off.images.cache_settings().min_rate_bytes_per_second == 0


def test_images_settings_from_yaml_and_env(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "images:\n"
        "  max_image_bytes: 650MiB\n"
        "  read_timeout: 2m\n"
        "  allowed_networks: [127.0.0.0/8, 'fd00::/8']\n"
    )
    s = load_config(
        AgentSettings,
        config_file=cfg,
        env={"OTHERIX_IMAGES__ALLOW_LOOPBACK_AND_LINK_LOCAL": "true"},
    )
    cache = s.images.cache_settings("otherix-agent/1")
    assert cache.max_image_bytes == 650 << 20
    assert cache.read_timeout == 120
    assert cache.allowed_networks == ("127.0.0.0/8", "fd00::/8")
    assert cache.allow_loopback_and_link_local
    assert cache.user_agent == "otherix-agent/1"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("images.allowed_networks", ["localhost"], "not a network"),
        ("images.max_image_bytes", "64GB", "invalid size"),
        ("images.read_timeout", 0, "read_timeout must be positive"),
        ("tasks.progress_interval", "10ms", "at least 0.1s"),
        ("tasks.vm_create_workers", 0, "vm_create_workers"),
        ("tasks.vm_create_per_source", 0, "vm_create_per_source"),
        ("images.min_rate_window", 0, "min_rate_window must be positive"),
        ("images.min_rate_bytes_per_second", "fast", "invalid size"),
    ],
)
def test_bad_settings_name_the_key(key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as err:
        load_config(AgentSettings, env={}, overrides={key: value})
    assert key.split(".")[0] in str(err.value)


@pytest.mark.parametrize(
    ("raw", "expected"), [(1024, 1024), ("1024", 1024), ("2 KiB", 2048), ("64GiB", 64 << 30)]
)
def test_parse_bytes(raw: object, expected: int) -> None:
    assert parse_bytes(raw) == expected
