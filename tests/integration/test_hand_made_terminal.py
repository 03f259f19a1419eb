"""The hand-made terminal of docs/protocol.md ("Try it with the mosquitto clients"), run as
the page prints it: bash, mosquitto_pub and mosquitto_sub, with a registered terminal's
account against the engine's broker. The engine must see it online, after a reconnect too,
and it must get the alerts of its village."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.simulator import SimTerminal
from tests.helpers import ZHONGSHAN, unique, wait_for
from tests.integration.engine import PROVINCE, Client, register
from tests.support.broker import Watch, alert_body

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
RECIPE_START = "# A hand-made terminal"

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None or shutil.which("bash") is None,
    reason="needs bash and the mosquitto clients (`sudo apt-get install mosquitto-clients`)",
)


def recipe() -> str:
    """The bash block of docs/protocol.md that makes a terminal by hand, as printed."""
    blocks = re.findall(r"```bash\n(.*?)```", PROTOCOL.read_text(encoding="utf-8"), re.S)
    found = [block for block in blocks if block.startswith(RECIPE_START)]
    assert len(found) == 1, "docs/protocol.md must print the hand-made terminal once"
    return str(found[0])


class Script:
    """The recipe running in bash, its output collected."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def collect(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(line.decode("utf-8", "replace"))

    def subscriber_pid(self) -> int | None:
        """The pid of the mosquitto_sub the script runs now, if it runs one."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                # "pid (comm) state ppid …"; comm may hold spaces, so split after it.
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                if comm == "mosquitto_sub" and ppid == self.process.pid:
                    return int(entry.name)
        return None


@contextlib.asynccontextmanager
async def hand_made(
    terminal: SimTerminal, broker_url: str, ca_pem: str, folder: Path
) -> AsyncIterator[Script]:
    ca = folder / "ca.pem"
    ca.write_text(ca_pem, encoding="ascii")
    host, port = broker_url.removeprefix("mqtts://").rsplit(":", 1)
    env = os.environ | {
        "T": terminal.id,
        "REGION": terminal.region,
        "PASSWORD": terminal.password or "",
        "HOST": host,
        "PORT": port,
        "CA": str(ca),
    }
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", recipe(), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    script = Script(process)
    reading = asyncio.create_task(script.collect(), name="recipe-output")
    try:
        yield script
    finally:
        # The whole process group: bash and the mosquitto client it runs.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        async with asyncio.timeout(10):
            await process.wait()
            await reading


async def engine_state(api: Client, terminal_id: str) -> str | None:
    response = await api.get(f"/api/v1/terminals/{terminal_id}", headers=PROVINCE)
    assert response.status == 200, await response.text()
    state = (await response.json())["state"]
    return None if state is None else str(state["state"])


async def test_the_recipe_terminal_is_online_gets_alerts_and_comes_back_online_after_a_drop(
    api: Client, watch: Watch, tmp_path: Path
) -> None:
    terminal = SimTerminal(unique("hand"), ZHONGSHAN)
    given = await register(api, [terminal])
    async with hand_made(terminal, given.url, given.ca_pem, tmp_path) as script:

        async def online() -> bool:
            return await engine_state(api, terminal.id) == "online"

        await wait_for(online, timeout=20, message="the engine sees the hand-made terminal")
        # Its village's topic reaches it (once its subscriber is up: until then the session
        # has no subscription to keep the alert for, so it is published again).
        village = "eb/v1/alert/35/3501/350102/350102001/350102001001"

        def printed() -> bool:
            return any(line.startswith(village + " ") for line in script.lines)

        for _ in range(40):
            await watch.publish(village, alert_body(unique("al")))
            with contextlib.suppress(AssertionError):
                await wait_for(printed, 0.5)
                break
        assert printed(), script.lines[-5:]

        # The link dies without a goodbye: the Will says offline, then the script says online.
        pid = await wait_for(script.subscriber_pid, message="mosquitto_sub runs")
        assert isinstance(pid, int)
        seen = len(watch.states(terminal.id))
        os.kill(pid, signal.SIGKILL)
        await wait_for(
            lambda: watch.states(terminal.id)[seen:][:2] == ["offline", "online"],
            timeout=20,
            message="offline (the Will), then online again",
        )
        await wait_for(online, timeout=10, message="the engine sees it online again")
