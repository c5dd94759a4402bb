"""``python -m otherix.agent``: the same as the ``otherix-agent`` console script."""

from otherix.agent.main import main

main()
