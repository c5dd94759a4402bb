"""The ``otherix`` operator CLI process package.

Owns the kubectl-style command line: click command groups (``commands``),
presentation (``output`` for generic renderers, ``views`` for resource-specific
layouts) and the ``~/.otherix/config`` file (``config``). Entry point is
``otherix.cli.main:main`` (console script ``otherix``). Never imports
``otherix.api``, ``otherix.agent`` or ``otherix.store``.
"""
