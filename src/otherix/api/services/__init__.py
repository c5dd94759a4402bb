"""Business rules of the control plane, one module per noun.

Services take a ``Deps`` bundle (store, settings, clock, notifier), run their
rules inside store transactions, and raise ``otherix.errors`` classes. They
never see HTTP objects; routes never see SQL.
"""
