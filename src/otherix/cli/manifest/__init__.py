"""Declarative manifests: ``otherix create|apply|delete -f`` (docs/pool-contract.md §12).

Owns reading ``apiVersion: otherix/v1`` streams (:mod:`.load`, :mod:`.parse`), turning the
validated documents into per-object items and pure create/apply/delete plans
(:mod:`.plan`), and running those plans against the API (:mod:`.run`). The
click commands live in ``otherix.cli.commands.manifests``.
"""
