"""A damaged image cache entry under a real ``otherix-agent``: detected, never used, re-fetched.

One node, one pool, one origin serving a ~4 MiB qcow2 image. Each case uses
its own URL (its own cache entry): a first VM fills the cache
(``{pool}/images/B`` with its ``.sha256`` sidecar and ``.source``), the entry
is damaged on disk, then another VM is created from the same URL with the
default pull policy (``if-not-present``, which would hit an intact entry
without a download). Damages:

- the sidecar overwritten with garbage, or emptied;
- the sidecar holding a well-formed sha256 that is not the file's (one hex
  digit changed);
- the image truncated to half its size;
- one byte of the image flipped (same size), the VM pinned to the image's
  sha256 (a pinned hit re-hashes the file; an unpinned hit trusts the
  sidecar by design, so that case pins).

The new VM's disk must hash to the origin's sha256 (the damaged bytes are
never used), the origin must have seen one more GET (re-fetched), and the
entry must be whole again (file, sidecar and ``.source`` agree with the
origin). A control case without damage checks that an intact entry is a hit
(no GET), so the re-fetches are the damage being detected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agenthelpers import (
    disk_path,
    entry_problems,
    file_sha,
    finished_task,
    one_node,
    sha,
)

from support.clustervms import Pool, create_vm, wait_phase
from support.harness import AgentProc, Cluster
from support.images import ImageOrigin, qcow2

pytestmark = pytest.mark.slow


@dataclass
class Env:
    origin: ImageOrigin
    cluster: Cluster
    node: AgentProc
    pool: Pool
    image: bytes


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("damage")
    image = qcow2(tmp, "base.qcow2", data_mib=4)
    with ImageOrigin() as origin, one_node(tmp) as (cluster, node):
        yield Env(origin, cluster, node, Pool(cluster, node, "dmg"), image)


# -- damages: (entry's image file, the origin's bytes) -----------------------------------


def garbage_sidecar(image: Path, _data: bytes) -> None:
    image.with_name(f"{image.name}.sha256").write_text("this is not a sha256\n")


def empty_sidecar(image: Path, _data: bytes) -> None:
    image.with_name(f"{image.name}.sha256").write_bytes(b"")


def wrong_sha_in_sidecar(image: Path, data: bytes) -> None:
    text = sha(data)
    image.with_name(f"{image.name}.sha256").write_text(("1" if text[0] == "0" else "0") + text[1:])


def truncate_image(image: Path, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.truncate(len(data) // 2)


def flip_a_byte(image: Path, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.seek(len(data) // 3)
        f.write(bytes([data[len(data) // 3] ^ 0xFF]))


CASES = [
    pytest.param(garbage_sidecar, False, "damaged cache entry", id="garbage-sidecar"),
    pytest.param(empty_sidecar, False, "damaged cache entry", id="empty-sidecar"),
    pytest.param(truncate_image, False, "damaged cache entry", id="truncated-image"),
    pytest.param(flip_a_byte, True, "damaged cache entry", id="flipped-byte-pinned"),
    pytest.param(wrong_sha_in_sidecar, False, "damaged cache entry", id="wrong-sha-sidecar"),
]


def build_vm(env: Env, name: str, path: str, pinned: bool) -> dict[str, Any]:
    extra = {"image_sha256": sha(env.image)} if pinned else {}
    create_vm(env.cluster, name, env.pool, env.origin.url_for(path), **extra)
    vm = wait_phase(env.cluster, name, "stopped", timeout=40)
    assert finished_task(env.cluster, vm)["status"] == "success"
    return vm


def cache_once(env: Env, key: str) -> tuple[str, Path]:
    """A first VM from ``/img/{key}/{key}.qcow2``: one GET, an intact entry."""
    path = f"/img/{key}/{key}.qcow2"
    env.origin.serve(path, env.image)
    vm = build_vm(env, f"{key}-first", path, pinned=False)
    entry = env.pool.root / "images" / f"{key}.qcow2"
    assert len(env.origin.gets(path)) == 1
    assert entry_problems(entry.parent, entry.name, env.image) == []
    assert file_sha(disk_path(env.node, vm)) == sha(env.image)
    return path, entry


def test_an_intact_entry_is_a_hit(env: Env, reliability) -> None:
    """The control for the cases below: no damage, no download."""
    path, entry = cache_once(env, "intact")
    vm = build_vm(env, "intact-again", path, pinned=False)
    gets = len(env.origin.gets(path))
    disk_ok = file_sha(disk_path(env.node, vm)) == sha(env.image)
    entry_ok = entry_problems(entry.parent, entry.name, env.image) == []
    checks = [disk_ok, entry_ok]
    reliability.record(
        "intact cache entry (control: no damage)",
        checked=len(checks),
        lost=checks.count(False),
        detail="a second VM from the same URL hits the cache (no GET)",
    )
    assert gets == 1
    assert disk_ok
    assert entry_ok


@pytest.mark.parametrize(("damage", "pinned", "row"), CASES)
def test_a_damaged_entry_is_never_used_and_is_fetched_again(
    env: Env, damage: Callable[[Path, bytes], None], pinned: bool, row: str, reliability
) -> None:
    key = damage.__name__.replace("_", "-")
    path, entry = cache_once(env, key)
    want = sha(env.image)
    damage(entry, env.image)
    damaged = entry_problems(entry.parent, entry.name, env.image)
    assert damaged, "the damage changed nothing"
    injected, checked = int(bool(damaged)), 0
    disk_sha: str | None = None
    problems: list[str] = []
    try:
        vm = build_vm(env, f"{key}-after", path, pinned)
        disk_sha = file_sha(disk_path(env.node, vm))
        checked += 1
        if disk_sha != want:
            problems.append(f"the disk hashes to {disk_sha}, the origin's image to {want}")
        if len(env.origin.gets(path)) != 2:
            problems.append(f"expected a second GET, the origin saw {env.origin.gets(path)}")
        problems += entry_problems(entry.parent, entry.name, env.image)
        checked += 1
        if env.pool.scratch():
            problems.append(f"scratch/ holds {env.pool.scratch()}")
    except AssertionError as exc:  # the create failed: recorded, then re-raised below
        problems.append(str(exc))
    finally:
        reliability.record(
            row,
            injected=injected,
            survived=int(not problems),
            checked=checked,  # the new VM's disk and the repaired entry
            lost=int(disk_sha is not None and disk_sha != want),  # damaged bytes in a disk
            detail="a VM create from the same URL after the damage (if-not-present)",
        )
    assert not problems, f"after {damage.__name__} ({damaged}): {problems}"
