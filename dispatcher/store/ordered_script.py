"""One Lua script run over a Redis connection of its own, in the order it is called, many calls
in flight, retried until Redis has run each.

The ack ingester records a province's acks a batch at a time. Through the client's pool, two
batches in flight run on two connections, in whichever order Redis reads them: a terminal's
``played`` could be recorded before its ``received``, which would then look late. Waiting for
each batch before sending the next keeps the order but leaves Redis idle while the engine
decodes. Here every call is written to one connection as soon as it is made; Redis runs them
in that order, back to back.

A call's future resolves only once Redis has run it. When the connection fails, the calls
written but not answered are written again, first and in their order, once a new connection
is up (a call Redis ran but whose reply was lost runs twice: the ack script records a repeated
ack as a duplicate, never counting it twice). A script Redis forgot (a restart, SCRIPT FLUSH)
is loaded again. An error the script itself raises fails that call only.

With ``wait_replicas`` set, each write of calls is followed on the same connection by Redis
``WAIT`` (it counts the replicas that have this connection's writes), and the calls resolve
only once it answered: a call whose connection died before then runs again, on the primary
the connection finds next (after a failover, the promoted replica, which may never have had
it). When fewer replicas than asked answer before the timeout, the calls resolve anyway
(``unreplicated`` counts those writes): they are on the primary, and holding them would stop
the acks of a province behind one missing replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import ConnectionPool
from redis.exceptions import NoScriptError, RedisError, ResponseError

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Call:
    keys: list[str]
    args: list[str | int]
    future: asyncio.Future[Any]
    # Its reply, kept until the WAIT after it answers (``wait_replicas``).
    reply: Any = None


# Stands in the written queue for the reply of a WAIT.
_WAIT = _Call([], [], None)  # type: ignore[arg-type]  # never resolved: a marker


class OrderedScript:
    """``call()`` from the event loop; ``run()`` as a background task does the work."""

    def __init__(self, pool: ConnectionPool, script: str, *, name: str) -> None:
        self._pool = pool
        self._script = script
        self._name = name
        self._waiting: deque[_Call] = deque()  # not written yet
        self._written: deque[_Call] = deque()  # written, no reply yet
        self._arrived = asyncio.Event()
        self._ran: list[_Call] = []  # run, their reply held until the WAIT after them answers
        self.down = False  # the last connection failed and no new one is up yet
        self.failures = 0
        # Replicas that must have a call's writes before it resolves (Redis WAIT); 0: none.
        self.wait_replicas = 0
        self.wait_timeout_ms = 500
        self.unreplicated = 0  # writes resolved with fewer replicas than asked

    @property
    def unanswered(self) -> int:
        return len(self._waiting) + len(self._ran) + sum(c is not _WAIT for c in self._written)

    def call(self, keys: list[str], args: list[str | int]) -> asyncio.Future[Any]:
        """Queue one run of the script; calls run in the order they were made."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Call(keys, args, future))
        self._arrived.set()
        return future

    async def run(self) -> None:
        backoff = 0.1
        while True:
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            try:
                await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                await conn.send_packed_command(
                    conn.pack_command("SCRIPT", "LOAD", self._script), check_health=False
                )
                sha = await conn.read_response(timeout=math.inf)
                if self.down:
                    log.info("store.script_link_back", script=self._name)
                self.down, backoff = False, 0.1
                await self._serve(conn, str(sha))
            except (RedisError, OSError) as exc:
                self.failures += 1
                if not self.down:
                    log.warning(
                        "store.script_link_down", script=self._name, error=str(exc),
                        unanswered=self.unanswered, retry_in=backoff,
                    )  # fmt: skip
                self.down = True
                # Unanswered calls go first again, in the order they were made: those run but
                # not yet confirmed by the replicas too (the primary may be gone with them).
                again = self._ran + [c for c in self._written if c is not _WAIT]
                self._waiting.extendleft(reversed(again))
                self._written.clear()
                self._ran.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)

    async def _serve(self, conn: Any, sha: str) -> None:
        reader = asyncio.create_task(self._read(conn))
        try:
            while True:
                while not self._waiting:
                    self._arrived.clear()
                    arrived = asyncio.ensure_future(self._arrived.wait())
                    await asyncio.wait({arrived, reader}, return_when=asyncio.FIRST_COMPLETED)
                    arrived.cancel()
                    if reader.done():
                        reader.result()  # raises why the connection ended
                calls = list(self._waiting)
                self._waiting.clear()
                self._written.extend(calls)
                commands: list[tuple[Any, ...]] = [
                    ("EVALSHA", sha, len(c.keys), *c.keys, *c.args) for c in calls
                ]
                if self.wait_replicas > 0:
                    # One WAIT for all the calls written together: it covers every write
                    # this connection made before it.
                    self._written.append(_WAIT)
                    commands.append(("WAIT", self.wait_replicas, self.wait_timeout_ms))
                packed = conn.pack_commands(commands)
                await conn.send_packed_command(packed, check_health=False)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self, conn: Any) -> None:
        while True:
            try:
                reply = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
            except NoScriptError as exc:
                # Redis lost the script: reconnect, load it and write the call again.
                raise RedisError(f"Redis no longer has the {self._name} script") from exc
            except ResponseError as exc:
                if self._written[0] is _WAIT:
                    # Not a primary any more (WAIT is refused on a replica): find the new one.
                    raise RedisError(f"WAIT refused: {exc}") from exc
                # The script failed for this call (a bug, not the connection): that call only.
                call = self._written.popleft()
                if not call.future.done():
                    call.future.set_exception(exc)
                continue
            call = self._written.popleft()
            if call is _WAIT:
                self._replicated(int(reply))
            elif self.wait_replicas > 0:
                call.reply = reply
                self._ran.append(call)
            elif not call.future.done():
                call.future.set_result(reply)

    def _replicated(self, replicas: int) -> None:
        """The WAIT after the calls in ``_ran`` answered: they resolve."""
        ran, self._ran = self._ran, []
        if replicas < self.wait_replicas:
            self.unreplicated += 1
            log.warning(
                "store.not_replicated", script=self._name, replicas=replicas,
                wanted=self.wait_replicas, calls=len(ran),
            )  # fmt: skip
        for call in ran:
            if not call.future.done():
                call.future.set_result(call.reply)
