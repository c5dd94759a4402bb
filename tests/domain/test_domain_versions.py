"""The version-skew rule (``otherix.domain.versions``), as a table."""

from __future__ import annotations

import pytest

from otherix.domain.versions import Release, accepted_range, release, skew_problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1.0", Release(0, 1)),
        ("1.4", Release(1, 4)),
        ("v2.10.3", Release(2, 10)),
        ("1.4.0rc1", Release(1, 4)),
        ("1.4.2.post1", Release(1, 4)),
        ("1.4.0.dev3", None),  # a development build
        ("1.4.0+g1234", None),  # a local build
        ("t", None),  # what test factories send
        ("fuzz", None),
        ("1", None),
    ],
)
def test_release_versions_and_development_builds(text, expected):
    assert release(text) == expected


@pytest.mark.parametrize(
    ("server", "agent", "accepted"),
    [
        ("1.4.0", "1.4.0", True),
        ("1.4.0", "1.4.7", True),  # patch levels never matter
        ("1.4.2", "1.3.0", True),  # one minor older
        ("1.4.0", "1.2.9", False),  # two minors older
        ("1.4.0", "1.5.0", False),  # newer than the control plane
        ("1.0.0", "0.9.0", False),  # another major
        ("2.0.0", "1.9.0", False),
        ("0.1.0", "0.0.3", True),
        ("0.0.1", "0.0.0", True),
        ("1.4.0", "t", True),  # development agent
        ("1.4.0", "1.2.0.dev1", True),
        ("1.4.0.dev2", "0.1.0", True),  # development control plane
    ],
)
def test_skew(server, agent, accepted):
    assert (skew_problem(server, agent) is None) is accepted


def test_the_refusal_says_which_versions_and_what_to_do():
    older = skew_problem("1.4.0", "1.2.0")
    assert older == (
        "agent version 1.2.0 is not supported by control plane 1.4.0, which accepts "
        "agents 1.3.x or 1.4.x: upgrade otherix-agent on this node to 1.4.0"
    )
    newer = skew_problem("1.4.0", "1.5.1")
    assert newer is not None
    assert "accepts agents 1.3.x or 1.4.x: upgrade the control plane to 1.5.x first" in newer
    assert skew_problem("1.0.0", "0.9.0") is not None
    assert "accepts agents 1.0.x:" in (skew_problem("1.0.0", "0.9.0") or "")


def test_accepted_range():
    assert accepted_range(Release(1, 4)) == (Release(1, 3), Release(1, 4))
    assert accepted_range(Release(1, 0)) == (Release(1, 0), Release(1, 0))
