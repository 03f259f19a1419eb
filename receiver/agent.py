"""The reference field-receiver agent: what a village loudspeaker terminal runs (``ebd receiver``).

One MQTT 5 link (aiomqtt) with the terminal id as client id and a persistent session: clean
start off on every connect, a session expiry of days, so alerts published while the terminal
was offline are delivered when it returns (unless they expired). It subscribes to its exact
topics at QoS 1, publishes a retained online state (its Last Will says offline), and hands
every message to ``TerminalBrain``, which verifies its signature against the terminal's keyring
first (a refusal is reported on the state topic, not retained); acks leave through an outbox
that survives reconnects, and
playback runs in its own task, so a link that drops mid-announcement neither stops the
loudspeaker nor loses the ``played`` ack. The link is re-opened with backoff on ``MqttError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from dispatcher.core.mandarin import espeak_input
from dispatcher.core.signing import Keyring, load_keyring_from_env
from dispatcher.core.tasks import cancel_until_done
from receiver.audio import AudioPlayer
from receiver.brain import (
    Ack,
    Action,
    Dropped,
    Play,
    Rejected,
    Stop,
    TerminalBrain,
    ack_topic,
    parse_alert,
    state_payload,
    state_topic,
)
from receiver.mqtt_lite import parse_mqtt_url, tls_context
from receiver.speech import is_english

__all__ = [
    "DEFAULT_VOICE",
    "FIRMWARE",
    "PLAYER_KINDS",
    "EspeakPlayer",
    "LogPlayer",
    "Player",
    "PlayerError",
    "ReceiverAgent",
    "choose_player",
    "run_agent",
]

log = structlog.get_logger(__name__)

FIRMWARE = "ebd-receiver/1"
# espeak-ng's Mandarin voice (``zh`` is its older MBROLA-based one).
DEFAULT_VOICE: Final = "cmn"
_RETRY_FIRST = 1.0
_RETRY_MAX = 60.0


class PlayerError(Exception):
    """Playback failed; the message becomes the ``failed`` ack's detail."""


class Player(Protocol):
    """Sounds one announcement (``item.text``, ``item.alert.repeat`` times) and returns when it
    is done. Cancellation means stop now: a cancel or an update took its place."""

    async def play(self, item: Play) -> None: ...


class LogPlayer:
    """Logs the announcement and takes as long as speaking it would (``play_time`` seconds if
    given, else ``seconds_per_char`` per character and repeat)."""

    def __init__(self, *, play_time: float | None = None, seconds_per_char: float = 0.22) -> None:
        self.play_time = play_time
        self.seconds_per_char = seconds_per_char

    async def play(self, item: Play) -> None:
        text = item.text
        log.info(
            "receiver.announcement", alert_id=item.alert_id, text=text, repeat=item.alert.repeat
        )
        duration = self.play_time
        if duration is None:
            duration = len(text) * self.seconds_per_char * item.alert.repeat
        await asyncio.sleep(duration)


class EspeakPlayer:
    """Speaks through the ``espeak-ng`` binary: Mandarin voice ``cmn`` (``voice``), English
    texts with ``english_voice``. With ``wav_file`` it writes the speech there instead of the
    sound card (``espeak-ng -w``): for a terminal whose amplifier takes files, and for tests.

    espeak-ng exits 0 even when it found no sound device; what it writes on stderr is the only
    sign, so any ``error`` there fails the playback (a ``failed`` ack naming it), rather than
    acking ``played`` for a warning nobody heard."""

    def __init__(
        self,
        binary: str = "espeak-ng",
        voice: str = DEFAULT_VOICE,
        *,
        english_voice: str = "en",
        wav_file: Path | None = None,
    ) -> None:
        self.binary = binary
        self.voice = voice
        self.english_voice = english_voice
        self.wav_file = wav_file

    @classmethod
    def available(cls, binary: str = "espeak-ng") -> bool:
        return shutil.which(binary) is not None

    async def play(self, item: Play) -> None:
        text = item.text
        voice = self.english_voice if is_english(text) else self.voice
        output = [] if self.wav_file is None else ["-w", str(self.wav_file)]
        # A region's slower speech (receiver.audio.SpokenPlay), else espeak-ng's own rate.
        speed = getattr(item, "speed", None)
        output += [] if speed is None else ["-s", str(speed)]
        log.info("receiver.announcement", alert_id=item.alert_id, text=text, voice=voice)
        # Chinese as tone-numbered pinyin: Debian's cmn voice misreads characters as English.
        # In a thread: the first call loads pypinyin's dictionaries (0.2 s).
        spoken_voice, spoken = await asyncio.to_thread(espeak_input, text, voice)
        for _ in range(item.alert.repeat):
            try:
                process = await asyncio.create_subprocess_exec(
                    self.binary,
                    "-v",
                    spoken_voice,
                    *output,
                    "--",
                    spoken,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                raise PlayerError(f"cannot run {self.binary}: {exc.strerror}") from exc
            try:
                _, stderr = await process.communicate()
            except asyncio.CancelledError:
                process.kill()
                await process.wait()
                raise
            complaint = _speech_error(stderr)
            if process.returncode != 0 or complaint is not None:
                reason = complaint or f"exited with code {process.returncode}"
                raise PlayerError(f"{self.binary}: {reason}")


def _speech_error(stderr: bytes) -> str | None:
    """espeak-ng's own error line (``error: …``, or ALSA's), None if it wrote none."""
    lines = stderr.decode("utf-8", "replace").splitlines()
    errors = [line.strip() for line in lines if "error" in line.lower()]
    if not errors:
        return None
    last = errors[-1]
    if "No such file or directory" in last or any("cannot find card" in e for e in errors):
        return f"no sound device ({last})"
    return last[:150]


PlayerKind = Literal["auto", "espeak", "log", "none"]
PLAYER_KINDS: tuple[PlayerKind, ...] = ("auto", "espeak", "log", "none")


def choose_player(
    kind: str | None = None, *, voice: str | None = None, binary: str = "espeak-ng"
) -> Player:
    """The player ``ebd receiver`` speaks with; ``kind`` and ``voice`` default to the
    environment's ``EBD_RECEIVER_PLAYER`` and ``EBD_ESPEAK_VOICE``, then ``auto`` and ``cmn``.

    ``auto``: espeak-ng when it is installed, else a warning (once, here) and the log player;
    ``espeak``: espeak-ng or PlayerError saying how to install it; ``log``: log each
    announcement and take as long as speaking it would; ``none``: say nothing, ack at once
    (a display or monitor terminal)."""
    kind = kind or os.environ.get("EBD_RECEIVER_PLAYER") or "auto"
    voice = voice or os.environ.get("EBD_ESPEAK_VOICE") or DEFAULT_VOICE
    if kind not in PLAYER_KINDS:
        raise PlayerError(f"unknown player {kind!r}: choose one of {', '.join(PLAYER_KINDS)}")
    if kind == "log":
        return LogPlayer()
    if kind == "none":
        return LogPlayer(play_time=0.0)
    if EspeakPlayer.available(binary):
        return EspeakPlayer(binary, voice)
    if kind == "espeak":
        raise PlayerError(
            f"{binary} is not installed: `sudo apt-get install espeak-ng` (Debian/Ubuntu), "
            "or choose --player log"
        )
    log.warning(
        "receiver.no_speech",
        message=f"{binary} is not installed, so announcements are only logged, not spoken; "
        "install it with `sudo apt-get install espeak-ng`, or choose --player log to silence "
        "this warning",
    )
    return LogPlayer()


def with_recorded_audio(
    player: Player, region: str, payload_of: Callable[[str], bytes | None]
) -> Player:
    """A speaking player that first tries the alert's recorded audio (``receiver.audio``:
    downloaded, its hash checked, played once; the variant of ``region`` when the payload
    has one), speaking the text when that fails."""
    if isinstance(player, EspeakPlayer):
        player = AudioPlayer(player)
    if isinstance(player, AudioPlayer):
        player.serve(region, payload_of)
    return player


class _Client(aiomqtt.Client):
    """aiomqtt's client, keeping the CONNACK's session-present flag that aiomqtt drops: it is
    how the agent (and its test) know the persistent session survived a reconnect."""

    session_present: bool | None = None

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self.session_present = flags.session_present
        super()._on_connect(client, userdata, flags, reason_code, properties)


class ReceiverAgent:
    """One terminal: ``await agent.run(stop)`` until ``stop`` is set (or the task is cancelled).

    ``connected`` is set while subscribed; ``session_present`` and ``connects`` describe the
    latest connection.
    """

    def __init__(
        self,
        terminal_id: str,
        region: str,
        mqtt_url: str,
        *,
        player: Player | None = None,
        session_expiry: int = 7 * 86400,
        keepalive: int = 60,
        firmware: str = FIRMWARE,
        state_file: Path | None = None,
        keyring: Keyring | None = None,
        ca_pem: str | None = None,
    ) -> None:
        # Without a keyring nothing could be verified, so nothing would play: fail at start
        # (KeyringError) rather than refuse every alert later.
        self.keyring = keyring if keyring is not None else load_keyring_from_env()
        self.brain = TerminalBrain(terminal_id, region, verify=self.keyring.verify)
        self.state_file = state_file
        # The payload of each alert answered, kept so the state file can restore it.
        self._payloads: dict[str, bytes] = {}
        if state_file is not None:
            self._load_state(state_file)
        self.terminal_id = terminal_id
        self.region = region
        # Without one given: espeak-ng if installed (``choose_player``), so a field terminal
        # speaks; a terminal that cannot says so in its log at start. A speaking player plays
        # an alert's recorded audio first (``with_recorded_audio``).
        self.player: Player = with_recorded_audio(
            player or choose_player(), region, self._verified_payload
        )
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.firmware = firmware
        self._url = parse_mqtt_url(mqtt_url)
        # mqtts://: the broker is verified against the CA it was provisioned with.
        self._tls = tls_context(ca_pem) if self._url.tls else None
        self.connected = asyncio.Event()
        self.connects = 0
        self.session_present: bool | None = None
        # Acks (and reports of refused messages) wait here until the broker took them, across
        # reconnects.
        self._outbox: deque[Ack | Rejected] = deque()
        self._outbox_ready = asyncio.Event()
        self._queue: asyncio.Queue[Play] = asyncio.Queue()
        self._playing: tuple[str, asyncio.Task[None]] | None = None

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set or the task is cancelled, then say offline and leave."""
        stop = stop or asyncio.Event()
        # Every log line of this agent, its player's included, names the terminal; a context
        # variable rather than a bound logger, so tasks started here inherit it.
        with structlog.contextvars.bound_contextvars(terminal_id=self.terminal_id):
            player = asyncio.create_task(
                self._play_loop(), name=f"receiver-player-{self.terminal_id}"
            )
            try:
                await self._link_loop(stop)
            finally:
                player.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await player

    # -- the link ---------------------------------------------------------------------------

    def _client(self) -> _Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is unannotated here
        properties.SessionExpiryInterval = self.session_expiry
        offline = state_payload("offline", self.region, self.firmware, None)
        return _Client(
            self._url.host,
            self._url.port,
            username=self._url.username,
            password=self._url.password,
            tls_context=self._tls,
            identifier=self.terminal_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            # Never aiomqtt's default (clean start on the first connect of each Client): every
            # reconnect makes a new Client, and a clean start would drop the session and every
            # alert queued in it while the terminal was away.
            clean_start=False,
            properties=properties,
            will=aiomqtt.Will(state_topic(self.terminal_id), offline, qos=1, retain=True),
            keepalive=self.keepalive,
            # aiomqtt's default of 10 s also bounds the wait for paho to confirm the DISCONNECT
            # on the way out, which it sometimes never does: a stopping terminal would hang.
            timeout=5,
        )

    async def _link_loop(self, stop: asyncio.Event) -> None:
        delay = _RETRY_FIRST
        while not stop.is_set():
            error: BaseException | None = None
            try:
                async with self._client() as client:
                    delay = _RETRY_FIRST
                    await self._serve(client, stop)
            except* aiomqtt.MqttError as group:
                error = group.exceptions[0]
            self.connected.clear()
            if error is None or stop.is_set():
                continue
            log.warning("receiver.link_down", error=str(error), retry_in=round(delay, 1))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, _RETRY_MAX)
        log.info("receiver.stopped")

    async def _serve(self, client: _Client, stop: asyncio.Event) -> None:
        self.connects += 1
        self.session_present = client.session_present
        await client.subscribe([(topic, 1) for topic in self.brain.topics])
        online = state_payload(
            "online",
            self.region,
            self.firmware,
            datetime.now(UTC),
            session="resumed" if client.session_present else "new",
        )
        await client.publish(state_topic(self.terminal_id), online, qos=1, retain=True)
        self.connected.set()
        log.info(
            "receiver.connected",
            session_present=client.session_present,
            topics=len(self.brain.topics),
            pending_acks=len(self._outbox),
        )
        if client.session_present:
            # What the broker queued meanwhile comes now (waiting in the client's queue until
            # _receive takes it): play only what is still in force once the burst settled.
            self.brain.start_catch_up(datetime.now(UTC))
        try:
            async with asyncio.TaskGroup() as group:
                receiving = group.create_task(self._receive(client), name="receiver-receive")
                sending = group.create_task(self._send_acks(client), name="receiver-send-acks")
                settling = group.create_task(self._settle(), name="receiver-catch-up")
                await stop.wait()
                await cancel_until_done(receiving, sending, settling)
        except asyncio.CancelledError:
            await self._say_offline(client)
            raise
        finally:
            if self.brain.catching_up:
                # The link went (or we stop) mid-burst: what came is played all the same.
                self._perform(self.brain.end_catch_up(datetime.now(UTC)))
        await self._say_offline(client)

    async def _settle(self) -> None:
        """End the catch-up burst once it settled (``TerminalBrain.catch_up_due``)."""
        while (due := self.brain.catch_up_due()) is not None:
            wait = (due - datetime.now(UTC)).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._perform(self.brain.end_catch_up(datetime.now(UTC)))

    async def _say_offline(self, client: _Client) -> None:
        """A clean goodbye: the retained state says offline, and the normal DISCONNECT that
        follows tells the broker not to publish the Will on top of it."""
        offline = state_payload("offline", self.region, self.firmware, datetime.now(UTC))
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(2.0):
                await client.publish(state_topic(self.terminal_id), offline, qos=1, retain=True)

    async def _receive(self, client: _Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, str):
                payload = payload.encode()
            elif not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            now = datetime.now(UTC)
            actions = self.brain.handle(str(message.topic), bytes(payload), now)
            for action in actions:
                if isinstance(action, Ack) and not action.repeated:
                    self._payloads.setdefault(action.alert_id, bytes(payload))
            self._perform(actions)

    async def _send_acks(self, client: _Client) -> None:
        topic = ack_topic(self.terminal_id)
        while True:
            while self._outbox:
                ack = self._outbox[0]
                if isinstance(ack, Rejected):
                    # Not retained: the retained state stays the plain online one.
                    report = state_payload(
                        "online", self.region, self.firmware, ack.at, rejected=ack
                    )
                    await client.publish(state_topic(self.terminal_id), report, qos=1)
                    self._outbox.popleft()
                    continue
                await client.publish(topic, ack.payload(), qos=1)
                # Only once the broker has it: a link lost mid-publish sends it again.
                self._outbox.popleft()
                log.debug("receiver.ack_sent", alert_id=ack.alert_id, state=ack.state)
            self._outbox_ready.clear()
            await self._outbox_ready.wait()

    # -- decisions and playback -------------------------------------------------------------

    def _load_state(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("receiver.state_unreadable", path=str(path), error=str(exc))
            return
        now = datetime.now(UTC)
        for alert_id, entry in saved.items() if isinstance(saved, dict) else []:
            try:
                payload = entry["payload"].encode()
                ack = entry["ack"]
                # Saved as received, signed; the clock is not checked: a key retired since
                # still vouches for what this terminal already answered.
                alert = parse_alert(self.keyring.check(payload).payload)
                last = Ack(
                    alert_id, ack["state"], datetime.fromisoformat(ack["at"]), ack.get("detail")
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("receiver.state_entry_skipped", alert_id=alert_id, error=str(exc))
                continue
            self._payloads[alert_id] = payload
            self.brain.restore(alert, last, now)

    def _verified_payload(self, alert_id: str) -> bytes | None:
        """The verified JSON of an alert answered: its fields the brain does not keep."""
        signed = self._payloads.get(alert_id)
        return None if signed is None else self.keyring.check(signed).payload

    def _save_state(self) -> None:
        """Alerts answered, so a reboot does not play a resent one again; written atomically."""
        if self.state_file is None:
            return
        entries = {
            alert.id: {
                "payload": self._payloads[alert.id].decode(),
                "ack": {"state": ack.state, "at": ack.at.isoformat(), "detail": ack.detail},
            }
            for alert, ack in self.brain.handled()
            if alert.id in self._payloads
        }
        tmp = self.state_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.warning("receiver.state_not_saved", path=str(self.state_file), error=str(exc))

    def _perform(self, actions: list[Action]) -> None:
        if any(isinstance(a, Ack) and not a.repeated for a in actions):
            self._save_state()
        for action in actions:
            if isinstance(action, Ack):
                self._outbox.append(action)
                self._outbox_ready.set()
                if action.repeated:
                    log.info("receiver.ack_repeated", alert_id=action.alert_id, state=action.state)
                elif action.state == "failed":
                    log.warning(
                        "receiver.alert_failed", alert_id=action.alert_id, detail=action.detail
                    )
                elif action.state == "received":
                    log.info("receiver.alert_received", alert_id=action.alert_id)
            elif isinstance(action, Play):
                self._queue.put_nowait(action)
            elif isinstance(action, Stop):
                log.info("receiver.alert_stopped", **_fields(action, "alert_id", "reason", "by"))
                if self._playing is not None and self._playing[0] == action.alert_id:
                    self._playing[1].cancel()
            elif isinstance(action, Rejected):
                log.warning(
                    "receiver.message_rejected",
                    **_fields(action, "topic", "reason", "kid", "alert_id"),
                )
                self._outbox.append(action)
                self._outbox_ready.set()
            elif isinstance(action, Dropped):
                log.warning(
                    "receiver.message_dropped", **_fields(action, "topic", "reason", "alert_id")
                )

    async def _play_loop(self) -> None:
        """One announcement at a time, in arrival order; a stopped one is skipped or cut."""
        while True:
            item = await self._queue.get()
            alert_id = item.alert_id
            self._perform(self.brain.begin(alert_id, datetime.now(UTC)))
            if not self.brain.is_active(alert_id):
                continue  # stopped while queued, or expired meanwhile
            log.info("receiver.alert_playing", alert_id=alert_id, repeat=item.alert.repeat)
            playing = asyncio.create_task(self.player.play(item), name=f"receiver-play-{alert_id}")
            self._playing = (alert_id, playing)
            try:
                await asyncio.wait({playing})
            except asyncio.CancelledError:
                playing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await playing
                raise
            finally:
                self._playing = None
            if playing.cancelled():
                continue  # a Stop did it; the brain acked it then
            error = playing.exception()
            now = datetime.now(UTC)
            if error is None:
                self._perform(self.brain.finished(alert_id, now))
                log.info("receiver.alert_played", alert_id=alert_id)
            else:
                detail = str(error) or type(error).__name__
                self._perform(self.brain.finished(alert_id, now, error=detail))


def _fields(action: object, *names: str) -> dict[str, object]:
    """These attributes of an action, for its log line."""
    return {name: getattr(action, name) for name in names}


async def run_agent(
    terminal_id: str,
    region: str,
    mqtt_url: str,
    *,
    player: Player | None = None,
    session_expiry: int = 7 * 86400,
    stop: asyncio.Event | None = None,
    state_file: Path | None = None,
    keyring: Keyring | None = None,
    ca_pem: str | None = None,
) -> None:
    """Run one field receiver until ``stop`` is set or the task is cancelled; without a
    ``keyring``, the one the file named by ``EBD_KEYRING`` holds. ``ca_pem``: the CA an
    mqtts:// broker is verified against."""
    agent = ReceiverAgent(
        terminal_id,
        region,
        mqtt_url,
        player=player,
        session_expiry=session_expiry,
        state_file=state_file,
        keyring=keyring,
        ca_pem=ca_pem,
    )
    await agent.run(stop)
