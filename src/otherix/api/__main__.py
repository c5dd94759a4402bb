"""``python -m otherix.api``."""

from otherix.api.main import main

main()
