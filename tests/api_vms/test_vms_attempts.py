"""A task's ``attempts``/``max_attempts`` are what the agent reports (issue 13: the
control plane showed ``1/25`` for a vm.create the agent tries 3 times at most)."""

from __future__ import annotations

import pytest
from test_vms_helpers import agent_report, create_vm, desired_tasks, get, node_with_pool


@pytest.fixture
def api(shared_api):
    return shared_api


def _task(api, px):
    node = node_with_pool(api, f"{px}-a", f"{px}-p")
    create_vm(api, f"{px}-1", pool=f"{px}-p")
    [task] = desired_tasks(api, node)
    return node, task["id"]


def _counts(api, task_id):
    body = get(api, f"/v1/tasks/{task_id}").json()
    return body["attempts"], body["max_attempts"]


def test_a_new_vm_create_shows_the_agent_default(api, px):
    _node, task_id = _task(api, px)
    assert _counts(api, task_id) == (0, 3)


def test_the_agents_count_is_what_the_task_shows(api, px):
    node, task_id = _task(api, px)
    r = agent_report(api, node, task_id, "running", attempt=1, max_attempts=5)
    assert r.status_code == 200, r.text
    assert _counts(api, task_id) == (1, 5)
    agent_report(api, node, task_id, "running", attempt=2, max_attempts=5)
    assert _counts(api, task_id) == (2, 5)
    error = {"code": "image_url_forbidden", "message": "refusing to fetch from 127.0.0.1"}
    agent_report(api, node, task_id, "failed", error=error, attempt=2, max_attempts=5)
    assert _counts(api, task_id) == (2, 5)


def test_an_older_agent_without_counts_gets_one_attempt(api, px):
    node, task_id = _task(api, px)
    agent_report(api, node, task_id, "running", progress=10)
    agent_report(api, node, task_id, "running", progress=20)
    assert _counts(api, task_id) == (1, 3)


@pytest.mark.parametrize("bad", [0, 101, -1, "two"])
def test_counts_out_of_range_are_refused(api, px, bad):
    node, task_id = _task(api, px)
    r = agent_report(api, node, task_id, "running", attempt=bad)
    assert r.status_code == 400, r.text
    assert _counts(api, task_id) == (0, 3)
