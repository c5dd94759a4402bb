"""Business rules of the control plane: one service class per noun.

Each service is built once by the composition root (``api/compose.py``) with
exactly the collaborators it uses: the store protocols of
``otherix.store.ports`` (never a SQLAlchemy connection), the other services it
calls, and the settings, clock and watch hub. It runs its rules inside store
transactions (a ``Tx``) and raises ``otherix.errors`` classes. Services never
see HTTP objects; routes never see SQL. The pure rules live in
``otherix.domain``; ``redaction`` and the token helpers of
``secrets`` are plain functions.
"""
