"""Hypothesis properties of the agent's path checks (``otherix.agent.fs``).

``safe_segment``/``safe_join`` are pure: a name is accepted exactly when joining
it lands one level below the root under that very name (judged by
``posixpath``, not by the code's own rules). ``ensure_within`` reads the
filesystem: each example builds a small tree of directories and symlinks (to
places inside the root, outside it, to the root's parent, dangling) in a fresh
sandbox and compares the verdict with a reference resolver that walks the
components itself with ``os.readlink``.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from pathlib import Path

import pytest
from fuzzhelpers import run_property
from hypothesis import strategies as st

from otherix.agent import fs

pytestmark = pytest.mark.security

ROOT = "/srv/pool"


def lands_one_level_below(name: str) -> bool:
    joined = posixpath.normpath(posixpath.join(ROOT, name))
    return posixpath.dirname(joined) == ROOT and posixpath.basename(joined) == name


def encodable_within_255(name: str) -> bool:
    try:
        return len(os.fsencode(name)) <= 255
    except UnicodeError:
        return False


SEGMENT_CHARS = st.sampled_from([*"a./\x00 \\é-", "\udcff", "\ud800"])
segments = st.one_of(
    st.text(SEGMENT_CHARS, max_size=5),
    st.sampled_from(["", ".", "..", "...", "./a", "a/..", "/"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é"]), st.integers(125, 258)),
)


def test_a_safe_segment_is_exactly_one_level_below_the_root(reliability):
    def body(name: str) -> str:
        try:
            fs.safe_segment(name)
        except fs.UnsafePath:
            accepted = False
        else:
            accepted = True
        expected = lands_one_level_below(name) and "\x00" not in name and encodable_within_255(name)
        assert accepted == expected, repr(name)
        return "accepted" if accepted else "refused"

    seen = run_property(reliability, "agent safe_segment = one level below", segments, body)
    assert seen["accepted"] >= 20
    assert seen["refused"] >= 20


def test_safe_join_accepts_only_when_every_segment_is_safe(reliability):
    def body(parts: list[str]) -> str:
        root = Path(ROOT)
        try:
            joined = fs.safe_join(root, *parts)
        except fs.UnsafePath:
            assert not all(
                lands_one_level_below(p) and "\x00" not in p and encodable_within_255(p)
                for p in parts
            ), parts
            return "refused"
        assert joined.relative_to(root).parts == tuple(parts)
        assert posixpath.normpath(str(joined)) == str(joined)  # nothing to resolve lexically
        return "accepted"

    seen = run_property(
        reliability, "agent safe_join = every part safe", st.lists(segments, max_size=4), body
    )
    assert seen["accepted"] >= 20
    assert seen["refused"] >= 20


# --- ensure_within over generated trees of symlinks --------------------------------------

NAMES = ["a", "b", "c"]
#: where a symlink may point: (base, relative path); base "root"/"outside"/"sandbox" or
#: "rel" for a relative link target
LINK_TARGETS = [
    ("root", ""),
    ("root", "a"),
    ("root", "a/b"),
    ("outside", ""),
    ("outside", "a"),
    ("sandbox", ""),
    ("sandbox", "root2"),  # shares the root's name as a text prefix
    ("rel", ".."),
    ("rel", "../.."),
    ("rel", "a"),
    ("rel", "../outside"),
    ("root", "missing"),  # dangling
]


@st.composite
def trees(draw: st.DrawFn):
    dirs = draw(st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2), max_size=4))
    links = draw(
        st.lists(
            st.tuples(
                st.builds(
                    lambda parent, name: [*parent, name],
                    st.lists(st.sampled_from(NAMES), max_size=1),
                    st.sampled_from(["l", "m"]),
                ),
                st.sampled_from(LINK_TARGETS),
            ),
            min_size=1,
            max_size=3,
        )
    )
    tail = draw(st.lists(st.sampled_from([*NAMES, "..", ".", "x"]), max_size=3))
    through = draw(st.sampled_from([[], *[parts for parts, _ in links]]))  # often via a link
    return dirs, links, through + tail


def resolve(path: str, hops: int = 0) -> str:
    """Reference realpath: walk the components, following symlinks with readlink."""
    assert hops < 40, "symlink loop"
    done = "/"
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            done = posixpath.dirname(done)
            continue
        candidate = posixpath.join(done, part)
        if os.path.islink(candidate):
            link = os.readlink(candidate)
            base = link if link.startswith("/") else posixpath.join(done, link)
            rest = "/".join(parts[i + 1 :])
            return resolve(posixpath.join(resolve(base, hops + 1), rest), hops + 1)
        done = candidate
    return done


def inside(path: str, root: str) -> bool:
    want = [p for p in root.split("/") if p]
    return [p for p in path.split("/") if p][: len(want)] == want


def build(sandbox: Path, dirs, links) -> Path:
    root = sandbox / "root"
    for base in (root, sandbox / "outside" / "a", sandbox / "root2"):
        base.mkdir(parents=True, exist_ok=True)
    for parts in dirs:
        (root.joinpath(*parts)).mkdir(parents=True, exist_ok=True)
    positions = [str(root.joinpath(*parts)) for parts, _ in links]
    for parts, (base, rel) in links:
        where = root.joinpath(*parts)  # root/l or root/<a|b|c>/l: a real parent directory
        where.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(where):
            continue
        if base == "rel":
            aim = posixpath.normpath(posixpath.join(str(where.parent), rel))
        else:
            anchor = {"root": root, "outside": sandbox / "outside", "sandbox": sandbox}[base]
            aim = str(anchor / rel if rel else anchor)
        if any(aim == pos or aim.startswith(pos + "/") for pos in positions):
            continue  # no link aims through a link: the tree has no loops
        where.symlink_to(rel if base == "rel" else aim)
    return root


def test_ensure_within_matches_a_readlink_walk(reliability):
    def body(example) -> str:
        dirs, links, target_parts = example
        sandbox = Path(tempfile.mkdtemp(prefix="ensure-within-"))
        try:
            root = build(sandbox, dirs, links)
            target = root.joinpath(*target_parts) if target_parts else root
            real_root = resolve(str(root))
            expected = resolve(str(target))
            try:
                got = fs.ensure_within(root, target)
            except fs.UnsafePath:
                assert not inside(expected, real_root), (str(target), expected)
                return "refused"
            assert inside(expected, real_root), (str(target), expected)
            assert str(got) == expected
            return "accepted"
        finally:
            shutil.rmtree(sandbox)

    seen = run_property(
        reliability,
        "agent ensure_within = readlink walk (symlinks in, out, dangling)",
        trees(),
        body,
        max_examples=250,
    )
    assert seen["accepted"] >= 30
    assert seen["refused"] >= 30
