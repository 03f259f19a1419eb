"""The pre-send preview: what an alert would reach before anything is sent.

For the cover of its areas: villages, villages with no terminal, registered terminals and
those offline now (their last state message, the broker's Last Will included), the SMS
recipients the alert would text (those who cannot hear the loudspeaker, ``needs: ["text"]``,
even when it goes to loudspeakers only: ``sms.for_hearing``) and those of them who cover a
village no loudspeaker will reach, the SMS's segments and cost, per city, county and
township. ``preview_digest`` names what the composer saw, so that a send can be refused when
it differs (areas widened, text changed); ``require_reachable`` refuses areas that resolve to
nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dispatcher.core.errors import MalformedRegionCode, NothingToReach
from dispatcher.core.models import AlertRequest, Channel
from dispatcher.core.regions import Level, RegionTree, code_path

# Offline terminals listed by id; the count covers them all.
MAX_OFFLINE_LISTED = 200
_ROW_LEVELS = (Level.CITY, Level.COUNTY, Level.TOWNSHIP)
_ROW_LENGTHS = tuple(level.code_length for level in _ROW_LEVELS)


def preview_digest(office_id: str, cover: list[str], req: AlertRequest) -> str:
    """SHA-256 (hex) of what a preview showed: the office, the cover, the channels and SMS
    roles, severity, status, message type, what it replaces and every text. Not the expiry:
    "in an hour" is the same warning a minute later."""
    seen = {
        "office": office_id,
        "cover": sorted(cover),
        "channels": sorted(channel.value for channel in req.channels),
        "sms_roles": sorted(req.sms_roles) if req.sms_roles else None,
        "severity": req.severity.value,
        "status": req.status.value,
        "msg_type": req.msg_type.value,
        "references": sorted(req.references),
        "event": req.event,
        "event_code": req.event_code,
        "headline": req.headline,
        "text": req.text,
        "instruction": req.instruction,
        "sms_text": req.sms_text,
        # Only when named, so every preview_id made before recordings existed still holds.
        **({"recording": req.recording} if req.recording else {}),
        **({"speech_text": req.speech_text} if req.speech_text else {}),
    }
    canonical = json.dumps(seen, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def require_reachable(preview: dict[str, Any]) -> None:
    """Refuse (422 ``nothing_to_reach``) a preview whose areas hold no terminal and no SMS
    recipient: sending it would warn nobody, and say it went out."""
    if preview["reachable"]:
        return
    names = "、".join(area["name"] for area in preview["areas"][:5])
    raise NothingToReach(
        f"nothing to reach in {names}: no registered terminal and no SMS recipient there; "
        "choose areas that have terminals, or register terminals or recipients first",
        details=[{"field": "areas", "message": "no terminal and no SMS recipient"}],
    )


@dataclass(frozen=True, slots=True)
class TerminalSeen:
    """A registered terminal below a cover, as the registry holds it."""

    id: str
    region: str
    state: str | None  # its last state message (JSON), None if it never sent one


@dataclass(frozen=True, slots=True)
class SmsShown:
    """An alert's SMS in one language as the planner would compose it."""

    text: str
    segments: int
    encoding: str
    truncated: bool


def summarise(
    tree: RegionTree,
    office_id: str,
    req: AlertRequest,
    cover: list[str],
    terminals: Sequence[TerminalSeen],
    persons: Sequence[str],
    sms: Mapping[str, SmsShown] | None,
    cost_per_segment: float,
    *,
    sms_channel: bool = True,
) -> dict[str, Any]:
    """The preview (see the module docstring) of ``req`` from ``office_id`` for ``cover`` (the
    checked minimal cover of its areas), given the ``terminals`` registered below the cover,
    the stored JSON of the SMS recipients posted below it (``persons``; only those the alert
    texts count), and its SMS texts by language (None when the engine has no SMS channel);
    ``sms_channel``: whether the engine texts at all (it has gateways)."""
    texting = Channel.SMS in req.channels and sms is not None
    # People who cannot hear the loudspeaker are texted every alert (``adapters.sms.planner``).
    hearing = sms_channel and sms is not None
    villages = [
        code for area in cover for code in tree.village_codes(area) if not tree.is_virtual(code)
    ]
    offline = [t for t in terminals if _offline(t)]
    with_terminal = {t.region for t in terminals}
    bare = [code for code in villages if code not in with_terminal]
    # Villages where a loudspeaker will not sound now: none there, or one there is offline.
    gaps = set(bare) | {t.region for t in offline if len(t.region) == Level.VILLAGE.code_length}
    gap_townships = {code[: Level.TOWNSHIP.code_length] for code in gaps}

    cover_set = frozenset(cover)
    roles = frozenset(req.sms_roles) if req.sms_roles else None
    recipients = covering = segments = for_hearing = 0
    by_region: dict[str, Counter[str]] = {
        name: Counter() for name in ("villages", "bare", "terminals", "offline", "recipients")
    }
    for code in villages:
        _count(by_region["villages"], code)
    for code in bare:
        _count(by_region["bare"], code)
    for terminal in terminals:
        _count(by_region["terminals"], terminal.region)
    for terminal in offline:
        _count(by_region["offline"], terminal.region)
    texts: Mapping[str, SmsShown] = sms if hearing and sms is not None else {}
    for raw in persons if texts else ():
        person = json.loads(raw)
        needs_text = "text" in person.get("needs", ())
        if not (texting or needs_text):
            continue
        postings = _postings_within(person, cover_set, None if needs_text else roles)
        if not postings:
            continue
        recipients += 1
        for_hearing += needs_text
        languages = person.get("languages") or ["zh"]
        lang = languages[0] if languages[0] in texts else "zh"
        segments += texts[lang].segments
        # A village's contact, or a township's, covers the villages no loudspeaker reaches.
        if any(p in gaps or p in gap_townships for p in postings):
            covering += 1
        for code in {p[:n] for p in postings for n in _ROW_LENGTHS if len(p) >= n}:
            by_region["recipients"][code] += 1

    rows = []
    for code in _row_codes(tree, cover):
        region = tree.get(code)
        rows.append(
            {
                "code": code,
                "name": region.name,
                "level": region.level.label_en,
                "villages": by_region["villages"][code],
                "villages_without_terminal": by_region["bare"][code],
                "terminals": by_region["terminals"][code],
                "offline": by_region["offline"][code],
                "recipients": by_region["recipients"][code],
            }
        )
    zh = sms.get("zh") if sms is not None else None
    return {
        "preview_id": preview_digest(office_id, cover, req),
        "areas": [{"code": code, "name": tree.name(code)} for code in cover],
        "totals": {
            "villages": len(villages),
            "villages_without_terminal": len(bare),
            "terminals": len(terminals),
            "terminals_offline": len(offline),
            "recipients": recipients,
            "recipients_covering_offline": covering,
            "sms_segments": segments,
            "sms_messages": recipients,
            "sms_cost_yuan": round(segments * cost_per_segment, 4),
        },
        "regions": rows,
        "offline_terminals": [
            {
                "id": t.id,
                "region": t.region,
                "region_name": tree.name(t.region) if t.region in tree else None,
                "last_seen": _state(t).get("at"),
            }
            for t in offline[:MAX_OFFLINE_LISTED]
        ],
        "sms": {
            "text": zh.text if zh else None,
            "segments": zh.segments if zh else 0,
            "cost_per_segment_yuan": cost_per_segment,
            "texts": {lang: asdict(shown) for lang, shown in (sms or {}).items()},
            # Whether the alert texts anyone: its channels name SMS and the engine has it.
            "channel": texting,
            # Of the recipients (counted in the totals), those who cannot hear the loudspeaker:
            # texted even when the alert goes to loudspeakers only.
            "for_hearing": for_hearing,
        },
        "reachable": bool(terminals) or recipients > 0,
    }


def _state(terminal: TerminalSeen) -> dict[str, Any]:
    if terminal.state is None:
        return {}
    try:
        state = json.loads(terminal.state)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _offline(terminal: TerminalSeen) -> bool:
    # The dispatch's rule (record_expected.lua): offline only if its last state says so.
    return terminal.state is not None and _state(terminal).get("state") == "offline"


def _count(counter: Counter[str], region: str) -> None:
    for n in _ROW_LENGTHS:
        if len(region) >= n:
            counter[region[:n]] += 1


def _postings_within(
    person: dict[str, Any], cover: frozenset[str], roles: frozenset[str] | None
) -> list[str]:
    """The regions of a stored recipient's postings inside the cover (of ``roles``): the
    planner's rule (``adapters.sms.planner._target``)."""
    found = []
    for region, role in person.get("postings", ()):
        if roles is not None and role not in roles:
            continue
        try:
            path = code_path(region)
        except MalformedRegionCode:
            continue
        if any(code in cover for code in path):
            found.append(region)
    return found


def _row_codes(tree: RegionTree, cover: list[str]) -> list[str]:
    """The cities, counties and townships at or below the cover, in code order."""
    codes: set[str] = set()
    for area in cover:
        if tree.level(area) in _ROW_LEVELS:
            codes.add(area)
        codes.update(
            region.code for region in tree.descendants(area) if region.level in _ROW_LEVELS
        )
    return sorted(codes)
