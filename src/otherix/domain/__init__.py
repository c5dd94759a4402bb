"""The pure rules of Otherix: no I/O, no wire models, no framework.

Plain dataclasses, enums and functions that the API's services, the agent,
the CLI and the config loader apply. Nothing here imports another otherix
package, pydantic, fastapi, starlette, sqlalchemy, httpx or click (an
import-linter contract in ``pyproject.toml`` enforces it), so each rule can be
read and table-tested on its own (``tests/domain``).

- ``names``: pool, node and VM name syntax, the pool type, the UUID test.
- ``paths``: pool path syntax, ``clean_path`` (Go's ``filepath.Clean``), the
  allowlist (strictly below a prefix), the auto-provision path guard.
- ``overlap``: one directory, one pool (how two pool paths on a node relate).
- ``placement``: where a VM's root disk goes (``decide``), effective free bytes.
- ``pressure``: the pool disk-pressure transition.
- ``liveness``: node status transitions (ready, unreachable, gone) and the
  projected status (cordoned, gone).
- ``defaultpool``: the default-pool provisioning plan and the last-instance rule.
- ``vms``: VM phases, image URL and digest syntax, the missing-disk rule.
"""
