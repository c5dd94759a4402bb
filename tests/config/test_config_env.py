"""``otherix.config``: which ``OTHERIX_`` variables are settings, which are the
programs' own, and which are typos that stop the start."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import Field

from otherix.agent.settings import AgentSettings
from otherix.api.settings import ApiSettings
from otherix.config import (
    PROGRAM_ENV_VARS,
    ConfigError,
    Section,
    check_env,
    env_layer,
    load_config,
    model_has,
)

ROOT = Path(__file__).resolve().parents[2]
#: Modules that name unknown variables on purpose (to see them refused).
DELIBERATE = {"tests/config/test_config_env.py", "tests/e2e/test_e2e_careless_env.py"}


@pytest.mark.parametrize(
    ("var", "message"),
    [
        (
            "OTHERIX_SERVR__LISTEN",
            "OTHERIX_SERVR__LISTEN: unknown setting; did you mean OTHERIX_SERVER__LISTEN?",
        ),
        (
            "OTHERIX_SERVER__LISTN",
            "OTHERIX_SERVER__LISTN: unknown setting; did you mean OTHERIX_SERVER__LISTEN?",
        ),
        ("OTHERIX_CONFG", "OTHERIX_CONFG: unknown setting; did you mean OTHERIX_CONFIG?"),
        (
            "OTHERIX_CONTROL_PLANE__UR",
            "OTHERIX_CONTROL_PLANE__UR: unknown setting; did you mean OTHERIX_CONTROL_PLANE__URL?",
        ),
        (
            "OTHERIX_STORAGE",
            "OTHERIX_STORAGE: unknown setting; it is a section: set its keys, like "
            "OTHERIX_STORAGE__ALLOWED_PATH_PREFIXES",
        ),
        (
            "OTHERIX_ZQXJ",
            "OTHERIX_ZQXJ: unknown setting (no program of Otherix reads it; "
            "the variables are listed in docs/configuration.md)",
        ),
    ],
)
@pytest.mark.parametrize("model", [ApiSettings, AgentSettings, None])
def test_an_unknown_variable_stops_every_program_with_the_closest_key(var, message, model):
    with pytest.raises(ConfigError) as caught:
        check_env({var: "x"}, model)
    assert str(caught.value) == message


def test_every_unknown_variable_is_named_once():
    with pytest.raises(ConfigError) as caught:
        check_env({"OTHERIX_B_TYPO": "1", "OTHERIX_A_TYPO": "2", "PATH": "/bin"}, ApiSettings)
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["OTHERIX_A_TYPO", "OTHERIX_B_TYPO"]


@pytest.mark.parametrize("var", sorted(PROGRAM_ENV_VARS))
@pytest.mark.parametrize("model", [ApiSettings, AgentSettings, None])
def test_the_programs_own_variables_are_known_to_all_three(var, model):
    check_env({var: "x"}, model)


def test_another_programs_settings_are_left_alone():
    agent_only = {"OTHERIX_STORAGE__HOST_ROOT": "/host", "OTHERIX_TASKS__VM_CREATE_ATTEMPTS": "5"}
    api_only = {"OTHERIX_SERVER__LISTEN": "127.0.0.1:1", "OTHERIX_WORKERS__ENABLED": "false"}
    env = {**agent_only, **api_only, "OTHERIX_SERVER": "http://cp:8080"}
    api = load_config(ApiSettings, env=env)
    assert (api.server.listen, api.workers.enabled) == ("127.0.0.1:1", False)
    agent = load_config(AgentSettings, env=env)
    assert (str(agent.storage.host_root), agent.tasks.vm_create_attempts) == ("/host", 5)
    check_env(env)  # the CLI knows them all too


def test_a_nested_section_may_be_given_whole_but_a_top_level_one_may_not():
    settings = load_config(ApiSettings, env={"OTHERIX_WORKERS__HEARTBEAT": "{interval: 5s}"})
    assert settings.workers.heartbeat.interval == 5.0
    assert env_layer(ApiSettings, {"OTHERIX_SERVER": "http://cp:8080"}) == {}
    assert not model_has(ApiSettings, ["server"])
    assert model_has(ApiSettings, ["server", "listen"])
    assert model_has(ApiSettings, ["workers", "heartbeat"])
    assert not model_has(ApiSettings, ["server", "listen", "deeper"])


class _Extra(Section):
    labels: dict[str, str] = Field(default_factory=dict)
    limit: int = 1


class _WithMapping(Section):
    extra: _Extra = _Extra()


def test_keys_come_from_the_model_so_a_new_key_is_known_at_once():
    # A free-form mapping field owns every sub-path; a key added to a model is known.
    assert model_has(_WithMapping, ["extra", "labels", "anything"])
    assert model_has(_WithMapping, ["extra", "limit"])
    assert not model_has(_WithMapping, ["extra", "limt"])
    settings = load_config(_WithMapping, env={"OTHERIX_EXTRA__LIMIT": "3"})
    assert settings.extra.limit == 3


def _env_names_in_sources() -> dict[str, str]:
    """Every string constant in the sources, tests and benches that is a whole
    ``OTHERIX_`` variable name without ``__`` (a program's own variable)."""
    found: dict[str, str] = {}
    for base in ("src", "tests", "bench", "scripts"):
        for path in (ROOT / base).rglob("*.py"):
            if str(path.relative_to(ROOT)) in DELIBERATE:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and node.value.startswith("OTHERIX_")
                    and node.value[len("OTHERIX_") :].replace("_", "").isalnum()
                    and node.value.isupper()
                    and "__" not in node.value
                ):
                    found.setdefault(node.value, str(path.relative_to(ROOT)))
    return found


def test_every_variable_a_program_reads_is_in_the_one_list():
    found = _env_names_in_sources()
    assert "OTHERIX_JOIN_TOKEN" in found  # the scan sees click's envvar=...
    missing = {
        name: where
        for name, where in found.items()
        if name not in PROGRAM_ENV_VARS
        and not model_has(ApiSettings, [name[8:].lower()])
        and not model_has(AgentSettings, [name[8:].lower()])
    }
    assert missing == {}, "add these to otherix.config.PROGRAM_ENV_VARS (and docs/configuration.md)"
