"""What a service may ask of the store, in its own words: one ``typing.Protocol``
per aggregate and the frozen rows it speaks (never ``dict[str, Any]``).

One SQLAlchemy Core class implements each protocol for both backends
(``store.pools.SqlPools``, ``store.nodes.SqlNodes``); every method takes the
:class:`~otherix.store.tx.Tx` of the transaction it runs in.
"""

from __future__ import annotations

from typing import TypeAlias

#: A JSON value as the store's JSON columns hold it.
JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
JSONObject: TypeAlias = "dict[str, JSONValue]"
