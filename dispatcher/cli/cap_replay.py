"""``ebd cap replay``: an archive of CAP messages replayed against a simulated region.

Starts an engine of its own (embedded mosquitto and redis-server, in a temporary folder, as
``ebd demo`` does) with one province office whose messages need no approver, registers one
simulated terminal per village of ``--region`` (default 350102 鼓楼区: 69 terminals, seconds),
then posts each CAP message in turn (``POST /api/v1/cap``, as ``ebd cap import`` does): the
files given (a folder: its ``*.xml`` in name order), then ``--generate N`` chains of
alert → update → cancel made here (an exercise, in the region and its children in turn). After
each accepted message it waits until every terminal it reached has decided (played, failed,
superseded, cancelled), so the next message meets settled terminals.

The report has a row per message: accepted or refused (with the engine's reason, e.g. a CAP
sample whose areas have no GB/T 2260 geocode), the terminals it was sent to, how many sounded
it, how many acked it ``failed``; ``--json`` adds, per message, which terminals sounded it how
often. It is deterministic for a given archive and region (alert ids aside), so a test pins it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web

from dispatcher.app import create_app
from dispatcher.cli.cap import _post as post_cap  # the same post as ``ebd cap import``
from dispatcher.cli.lang import t
from dispatcher.cli.tables import render
from dispatcher.core.auth import new_token
from dispatcher.core.config import ApiSettings, LogSettings, OfficeConfig, RegionsSettings
from dispatcher.core.errors import DemoFailed
from dispatcher.core.regions import RegionTree
from dispatcher.core.signing import Keyring
from dispatcher.embedded.processes import free_port
from dispatcher.http.middleware import JsonErrorRunner
from dispatcher.settings import Settings
from receiver.simulator import Behaviour, Simulator, village_terminals

CST = timezone(timedelta(hours=8))
SENDER = "replay@ebd.invalid"
CHUNK = 5000
# What an office's CAP must hold to be issued here; the real samples mostly lack it.
SETTLE_TIMEOUT = 30.0
# An alert's status (dispatcher.core.alert_status) while its terminals are not known yet.
_SENDING = frozenset({"queued", "dispatching", "unknown"})


@dataclass
class Outcome:
    """One replayed message and what the terminals did with it."""

    message: str  # file name, or ``chain-1 alert`` for a generated one
    msg_type: str  # as the engine took it, or ``?`` when refused
    result: str  # accepted | duplicate | refused | timeout
    alert_id: str | None = None
    reason: str | None = None  # why refused
    expected: int = 0  # terminals the engine sent it to
    sounded: int = 0  # terminals that played it aloud
    acked_played: int = 0  # terminals that acked played (a silent cancel too)
    failed: int = 0  # terminals that acked failed (superseded, cancelled, expired …)
    played_by: dict[str, int] = field(default_factory=dict)  # terminal → times sounded


def cap_chain(index: int, region: str, name: str, base: datetime) -> list[tuple[str, bytes]]:
    """Generated chain ``index``: an exercise alert for ``region``, its update and the cancel
    of the update, sent one second apart from ``base``; CAP 1.2 as a linked system sends it."""
    ident = f"replay-{secrets.token_hex(4)}-{index}"
    sent = [(base + timedelta(seconds=n)).replace(microsecond=0) for n in range(3)]
    expires = (base + timedelta(hours=2)).replace(microsecond=0)
    refs = [f"{SENDER},{ident}-{n},{sent[n].isoformat()}" for n in range(2)]
    steps = [("alert", "Alert", "", "Moderate"), ("update", "Update", refs[0], "Severe")]
    steps.append(("cancel", "Cancel", refs[1], "Severe"))
    out = []
    for n, (label, msg_type, references, severity) in enumerate(steps):
        headline = f"{name}暴雨预警（演练{index}）" + ("更新" if n == 1 else "")
        doc = _cap(
            f"{ident}-{n}", sent[n], expires, msg_type, references, severity, headline, region, name
        )
        out.append((f"chain-{index} {label}", doc))
    return out


def _cap(
    identifier: str,
    sent: datetime,
    expires: datetime,
    msg_type: str,
    references: str,
    severity: str,
    headline: str,
    region: str,
    name: str,
) -> bytes:
    refs = f"  <references>{escape(references)}</references>\n" if references else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>{SENDER}</sender>
  <sent>{sent.isoformat()}</sent>
  <status>Exercise</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
{refs}  <info>
    <language>zh-CN</language>
    <category>Met</category>
    <event>暴雨</event>
    <urgency>Expected</urgency>
    <severity>{severity}</severity>
    <certainty>Likely</certainty>
    <eventCode>
      <valueName>GB/T 35965.1</valueName>
      <value>11B03</value>
    </eventCode>
    <expires>{expires.isoformat()}</expires>
    <senderName>回放工具</senderName>
    <headline>{escape(headline)}</headline>
    <description>预计未来6小时降雨量将达50毫米以上。</description>
    <instruction>请远离低洼地带。</instruction>
    <area>
      <areaDesc>{escape(name)}</areaDesc>
      <geocode>
        <valueName>GB/T 2260</valueName>
        <value>{region}</value>
      </geocode>
    </area>
  </info>
</alert>
""".encode()


def archive(paths: Sequence[Path]) -> list[tuple[str, bytes]]:
    """The messages of ``paths`` in order: a folder gives its ``*.xml`` files by name."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.xml")) if path.is_dir() else [path])
    return [(file.name, file.read_bytes()) for file in files]


def generated(tree: RegionTree, region: str, n: int, now: datetime) -> list[tuple[str, bytes]]:
    """``n`` chains, for ``region`` and then its children in turn."""
    targets = [region] + [r.code for r in tree.children(region)]
    base = now - timedelta(seconds=3 * n + 5)  # in the past: sent is never ahead of a clock
    messages: list[tuple[str, bytes]] = []
    for i in range(n):
        code = targets[i % len(targets)]
        messages += cap_chain(i + 1, code, tree.name(code), base + timedelta(seconds=3 * i))
    return messages


async def replay(
    messages: list[tuple[str, bytes]],
    *,
    region: str,
    regions_file: Path,
    state_dir: Path | None = None,
    settle_timeout: float = SETTLE_TIMEOUT,
    play_time: float = 0.0,
    tree: RegionTree | None = None,
) -> list[Outcome]:
    """Replay ``messages`` against an engine of its own and the villages of ``region``.

    ``play_time``: seconds a terminal takes to play a warning. With 0 each message is posted
    once every terminal decided on the one before; otherwise once every terminal took it
    (acked), so an update or cancel comes while what it replaces is still playing."""
    tree = tree or RegionTree.from_csv(regions_file)
    state = state_dir or Path(tempfile.mkdtemp(prefix="ebd-replay-"))
    token, digest = new_token()
    settings = Settings(
        # Self-contained, like the demo: no EBD_ variable may send it elsewhere.
        _env_prefix="EBD_REPLAY_UNUSED_",  # type: ignore[call-arg]  # a pydantic-settings init option
        api=ApiSettings(listen=f"127.0.0.1:{free_port()}"),
        regions=RegionsSettings(file=regions_file),
        log=LogSettings(format="json", level="warning"),
        offices=[
            OfficeConfig(
                id="replay",
                name="福建省应急管理厅（回放）",
                region="35",
                token_sha256=digest,
                machine_approved=True,
            )
        ],
        state_dir=state,
    )
    app = create_app(settings, tree=tree)
    runner = JsonErrorRunner(app, access_log=None)
    await runner.setup()
    base = f"http://{settings.api.listen}"
    try:
        await web.TCPSite(runner, settings.api.host, settings.api.port).start()
        terminals = village_terminals(tree.villages(region))
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            answers = []
            for start in range(0, len(terminals), CHUNK):
                part = terminals[start : start + CHUNK]
                body = [{"id": term.id, "region": term.region} for term in part]
                answers.append(await _call(session, "POST", f"{base}/api/v1/terminals", body))
            passwords = {c["id"]: c["password"] for a in answers for c in a["credentials"]}
            for term in terminals:
                term.password = passwords[term.id]
            broker = answers[-1]["broker"]
            keyring = Keyring.from_json(json.dumps(answers[-1]["keyring"]))
            sim = Simulator(
                terminals,
                broker["url"],
                keyring=keyring,
                ca_pem=broker["ca_pem"],
                behaviour=Behaviour(play_time=play_time),
            )
            async with sim:
                outcomes = []
                for name, data in messages:
                    outcome = await _post(session, base, token, name, data)
                    outcomes.append(outcome)
                    if outcome.alert_id is not None:
                        await _settle(session, base, sim, outcome, settle_timeout, play_time > 0)
                for outcome in outcomes:
                    if outcome.alert_id is not None:
                        await _settle(session, base, sim, outcome, settle_timeout, False)
                        _count(sim, outcome)
                return outcomes
    finally:
        await runner.cleanup()


async def _post(
    session: aiohttp.ClientSession, base: str, token: str, name: str, data: bytes
) -> Outcome:
    status, answer = await post_cap(session, base, token, data)
    if isinstance(answer, Exception):
        reason = getattr(answer, "message", None) or str(answer)
        reason = reason.removeprefix(f"the engine refused it ({status}): ")
        return Outcome(name, "?", "refused", reason=reason)
    duplicate = bool(answer.get("cap", {}).get("duplicate"))
    result = "duplicate" if duplicate else "accepted"
    return Outcome(name, str(answer.get("msg_type")), result, str(answer["id"]))


async def _settle(
    session: aiohttp.ClientSession,
    base: str,
    sim: Simulator,
    outcome: Outcome,
    timeout: float,
    taken_only: bool,
) -> None:
    """Until every terminal the alert was sent to decided on it (``taken_only``: acked it
    at all); the result becomes ``timeout`` if that takes longer than ``timeout`` seconds."""
    alert_id = outcome.alert_id
    assert alert_id is not None  # noqa: S101  only accepted messages are waited for
    url = f"{base}/api/v1/alerts/{alert_id}"
    deadline = time.monotonic() + timeout
    while True:
        delivery = (await _call(session, "GET", url))["delivery"]
        outcome.expected = int(delivery.get("expected", 0))
        counts = sim.counts
        taken = counts.received(alert_id) if taken_only else counts.played(alert_id)
        taken += counts.failed(alert_id)
        state = delivery.get("state")
        # Once sent (the expected terminals known), whatever ended it since.
        if state not in _SENDING and taken >= outcome.expected:
            return
        if time.monotonic() > deadline:
            outcome.result = "timeout"
            return
        await asyncio.sleep(0.05)


def _count(sim: Simulator, outcome: Outcome) -> None:
    alert_id = outcome.alert_id
    assert alert_id is not None  # noqa: S101  only accepted messages are counted
    outcome.played_by = {
        term.id: term.plays[alert_id] for term in sim.terminals if term.plays.get(alert_id)
    }
    outcome.sounded = len(outcome.played_by)
    outcome.acked_played = sim.counts.played(alert_id)
    outcome.failed = sim.counts.failed(alert_id)


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> dict[str, Any]:
    async with session.request(method, url, json=body) as response:
        answer = await response.json(content_type=None)
        if response.status >= 400:
            raise DemoFailed(f"{method} {url} → {response.status}: {answer}")
        return dict(answer)


def report_rows(outcomes: list[Outcome]) -> list[list[str]]:
    """The report as table rows (header first), without alert ids: the same every run."""
    rows = [["#", "message", "type", "result", "sent to", "sounded", "failed", "reason"]]
    for n, o in enumerate(outcomes, 1):
        taken = o.result != "refused"
        rows.append(
            [
                str(n),
                o.message,
                o.msg_type,
                o.result,
                str(o.expected) if taken else "",
                str(o.sounded) if taken else "",
                str(o.failed) if taken else "",
                (o.reason or "")[:120],
            ]
        )
    return rows


def cmd_cap_replay(args: argparse.Namespace) -> int:
    from dispatcher.cli.data import regions_file
    from dispatcher.logs import configure_logging

    configure_logging("json", "warning")
    path = regions_file(args.regions_file)
    tree = RegionTree.from_csv(path)
    if args.region not in tree:
        print(t(f"未知行政区划代码 {args.region}", f"unknown region code {args.region}"))
        return 2
    try:
        messages = archive([Path(p) for p in args.paths])
    except OSError as exc:
        print(t(f"无法读取：{exc}", f"cannot read: {exc}"))
        return 2
    messages += generated(tree, args.region, args.generate, datetime.now(CST))
    if not messages:
        print(t("没有要回放的消息", "nothing to replay: give CAP files or --generate N"))
        return 2
    outcomes = asyncio.run(
        replay(messages, region=args.region, regions_file=path, tree=tree, play_time=args.play_time)
    )
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes], ensure_ascii=False, indent=1))
    else:
        rows = report_rows(outcomes)
        print(render(rows[0], rows[1:]))
    return 1 if any(o.result == "timeout" for o in outcomes) else 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``replay`` under ``ebd cap`` (whose subcommands ``dispatcher.cli.cap`` makes)."""
    cap = sub.choices["cap"]
    actions = [a for a in cap._actions if isinstance(a, argparse._SubParsersAction)]
    p = actions[0].add_parser(
        "replay",
        help=t(
            "对模拟终端回放 CAP 消息存档并报告各终端播发情况（自带引擎）",
            "replay a CAP archive against simulated terminals and report what each played",
        ),
    )
    p.add_argument(
        "paths", nargs="*", metavar="DIR|FILE", help=t("CAP 文件或目录", "CAP files or folders")
    )
    p.add_argument(
        "--region",
        default="350102",
        help=t("模拟区域（默认 350102 鼓楼区）", "the simulated region (default 350102)"),
    )
    p.add_argument(
        "--generate",
        type=int,
        default=0,
        metavar="N",
        help=t("另生成 N 条 预警→更新→解除 链", "also N generated alert → update → cancel chains"),
    )
    p.add_argument(
        "--play-time",
        type=float,
        default=0.0,
        metavar="S",
        help=t(
            "终端播发一条预警用时（秒）；大于 0 时更新与解除在播发中到达",
            "seconds a terminal plays a warning; above 0 updates and cancels come mid-play",
        ),
    )
    p.add_argument("--json", action="store_true", help=t("以 JSON 输出", "print JSON"))
    p.add_argument("--regions-file", help=t("区划文件", "the regions file"))
    p.set_defaults(func=cmd_cap_replay)
