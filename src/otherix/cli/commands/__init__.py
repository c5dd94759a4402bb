"""The ``otherix`` command groups, one module per resource (then verb).

``config`` (local cluster list), ``users``, ``tokens``, ``nodes`` (with
``join_tokens``), ``pools`` (``pools_read``, ``pools_write``, ``pools_ops``,
``pool_targets``), ``vms``, ``tasks``, ``cluster`` and ``completion``. ``common`` holds the
shared options. Every command gets its I/O, config and HTTP client from the
:class:`~otherix.cli.context.CliContext`; ``otherix.cli.main`` mounts the
groups on the root command.
"""
