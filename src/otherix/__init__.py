"""Otherix: storage side of a self-hosted VM control plane.

Three processes share this distribution: ``otherix.api`` (control plane),
``otherix.agent`` (one per node) and ``otherix.cli`` (operator CLI). Nothing
here runs at import time.
"""

__version__ = "0.1.0"
