"""The engine's view of Redis: one ``Store`` made of a part per concern, on one client.

    alerts.py     alerts, idempotency, dispatch records           keys.py   every key
    delivery.py   expected terminals, acks, counts                lua.py    scripts as files
    acklog.py     the ack log                                     base.py   client, errors
    sweeps.py     deadlines, resends, escalations                 scripts/  the Lua
    terminals.py  the terminal registry
    streams.py    work streams and the dispatch outbox

Nothing outside ``dispatcher/store`` (and the features' own ``store.py``, on this client)
speaks to Redis.
"""

from __future__ import annotations

from dispatcher.store.acklog import AckLogStore
from dispatcher.store.alerts import AlertStore
from dispatcher.store.streams import OutboxStore
from dispatcher.store.sweeps import SweepStore
from dispatcher.store.terminals import TerminalStore


class Store(AlertStore, SweepStore, AckLogStore, TerminalStore, OutboxStore):
    """Every part on one Redis client; ``Store.from_url`` makes one."""
