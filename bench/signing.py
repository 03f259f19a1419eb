"""What signed payloads cost: signing (once per published message, in the engine) and verifying
(once per terminal that receives it), for Ed25519 and SM2 with SM3, in µs per operation
(median of --runs runs of --ops operations each), and the time a province wave's worth of
terminals (17,498) takes to verify one alert: each real terminal verifies once, on its own
CPU; the simulator verifies each distinct message once per process (CachingVerifier).

    .venv/bin/python -m bench.signing [--runs 7] [--ops 200] [--terminals 17498] [--full]

Without --full the SM2 wave figure is the per-terminal median times the terminals (a real
run takes minutes); Ed25519's is always measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from dispatcher.core.signing import (
    ALG_ED25519,
    ALG_SM2,
    CachingVerifier,
    Keyring,
    Signer,
    SigningKey,
)

NOW = datetime(2026, 7, 1, tzinfo=UTC)


def alert_payload() -> bytes:
    """A province-wide alert of the usual size: the texts near their limits."""
    body = {
        "v": 1,
        "id": "bench-1",
        "msg_type": "alert",
        "status": "actual",
        "severity": "red",
        "event": "台风",
        "event_code": "11B01",
        "headline": "福建省台风红色预警" * 10,
        "text": "预计未来24小时内将出现12级以上大风，请注意防范。" * 40,
        "instruction": "请立即转移至安全场所。" * 40,
        "sent": "2026-07-01T08:00:00+08:00",
        "expires": "2026-07-01T14:00:00+08:00",
        "areas": ["35"],
        "references": [],
        "repeat": 3,
        "audio": None,
    }
    return json.dumps(body, ensure_ascii=False).encode()


def per_op_us(operation: Callable[[], object], ops: int, runs: int) -> float:
    """The median over ``runs`` of the mean µs per call of ``ops`` calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(ops):
            operation()
        samples.append((time.perf_counter() - started) / ops * 1e6)
    return statistics.median(samples)


def wave_seconds(operation: Callable[[], object], terminals: int) -> float:
    started = time.perf_counter()
    for _ in range(terminals):
        operation()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--ops", type=int, default=200, help="Ed25519 ops per run; SM2 gets 1/10")
    parser.add_argument("--terminals", type=int, default=17_498)
    parser.add_argument("--full", action="store_true", help="also run the SM2 wave for real")
    args = parser.parse_args(argv)
    payload = alert_payload()
    rows = []
    for alg, ops in ((ALG_ED25519, args.ops), (ALG_SM2, max(args.ops // 10, 5))):
        key = SigningKey.generate(alg)
        signer = Signer(key)
        ring = Keyring([key.public()])
        message = signer.sign(payload)
        assert ring.verify(message, NOW) == payload
        sign_us = per_op_us(lambda: signer.sign(payload), ops, args.runs)  # noqa: B023  used now
        verify_us = per_op_us(lambda: ring.verify(message, NOW), ops, args.runs)  # noqa: B023
        measured = alg == ALG_ED25519 or args.full
        if measured:
            wave = wave_seconds(lambda: ring.verify(message, NOW), args.terminals)  # noqa: B023
        else:
            wave = verify_us * args.terminals / 1e6
        cached = CachingVerifier(ring)
        cached_wave = wave_seconds(lambda: cached(message, NOW), args.terminals)  # noqa: B023
        rows.append((alg, len(message), sign_us, verify_us, wave, measured, cached_wave))
        print(f"{alg}: done", file=sys.stderr, flush=True)
    print(f"payload {len(payload)} bytes; median of {args.runs} runs; {args.terminals:,} terminals")
    print(
        f"{'alg':<8} {'message B':>9} {'sign µs':>10} {'verify µs':>10} "
        f"{'wave, each verifies':>21} {'wave, cached (sim)':>19}"
    )
    for alg, size, sign_us, verify_us, wave, measured, cached_wave in rows:
        label = f"{wave:,.2f} s" + ("" if measured else " (est.)")
        print(
            f"{alg:<8} {size:>9,} {sign_us:>10,.1f} {verify_us:>10,.1f} "
            f"{label:>21} {cached_wave * 1000:>16,.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
