"""Many SADD and SREM as one command, for imports that update thousands of region sets.

Members are terminal ids and recipient keys, which hold no space (``wire.TERMINAL_ID``,
``adapters.sms.gateway.recipient_key``): the script takes each set's members as one string.

redis-py reads each reply of a pipeline one by one, about 50 µs of the event loop each: an
import of 100,000 people or terminals touches ~18,700 region sets per pass over the province,
hundreds of thousands of replies in all. ``SetChanges`` gathers a chunk's changes and queues
them as one script call, whose one reply is all the client reads.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from redis.commands.core import AsyncScript

# KEYS: the sets. ARGV[i]: "+" (add) or "-" (remove), then the members of KEYS[i], separated
# by spaces: one argument per set, not per member, for redis-py to encode. unpack() takes a few
# thousand values at most: members go in batches.
SCRIPT = """
for i, key in ipairs(KEYS) do
  local spec = ARGV[i]
  local command = string.sub(spec, 1, 1) == '+' and 'SADD' or 'SREM'
  local batch, n = {}, 0
  for member in string.gmatch(string.sub(spec, 2), '[^ ]+') do
    n = n + 1
    batch[n] = member
    if n == 1000 then
      redis.call(command, key, unpack(batch))
      batch, n = {}, 0
    end
  end
  if n > 0 then
    redis.call(command, key, unpack(batch))
  end
end
return #KEYS
"""


class SetChanges:
    """Members to add to and remove from sets, queued as one call of ``SCRIPT``: removals
    first, so a member removed from and added to one set ends up in it."""

    def __init__(self) -> None:
        self.added: defaultdict[str, list[str]] = defaultdict(list)
        self.removed: defaultdict[str, list[str]] = defaultdict(list)

    def add(self, key: str, member: str) -> None:
        self.added[key].append(member)

    def remove(self, key: str, member: str) -> None:
        self.removed[key].append(member)

    def queue(self, pipe: Any, script: AsyncScript) -> None:
        """Queue the changes into ``pipe`` (nothing if there are none)."""
        keys: list[str] = []
        args: list[str] = []
        for sign, changes in (("-", self.removed), ("+", self.added)):
            for key, members in changes.items():
                joined = " ".join(members)
                if joined.count(" ") != len(members) - 1:
                    raise ValueError(f"a member of {key} holds a space: {members!r}")
                keys.append(key)
                args.append(sign + joined)
        if keys:
            # What ``script(..., client=pipe)`` does, without its await: the pipeline loads
            # the script before it runs, then the call is queued like any other command.
            pipe.scripts.add(script)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
