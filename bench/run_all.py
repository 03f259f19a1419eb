"""Every benchmark in one run (``make bench``), and the targets checked against its figures.

    .venv/bin/python bench/run_all.py                    # all of them, about 15 minutes
    .venv/bin/python bench/run_all.py --only wave,storm  # some of them
    .venv/bin/python bench/run_all.py --quick            # small sizes, one run each: a smoke test

Each benchmark runs as its own process (each is also runnable alone, see its docstring) and
writes its JSON into ``--out`` (default ``bench-results/``). Their Markdown tables, the machine
and the exact commands go to ``bench-results/summary.md``, with the performance targets:

    wave 17,498    engine / raw limit ≤ 1.3, measured in the same run
    storm          the engine's ack ingestion ≥ 70 % of what mosquitto_sub drains
    wave 1,000     engine ≤ raw + 30 ms, first terminal ≤ 20 ms after the 201
    api            issue latency p99 ≤ 50 ms with 50 offices issuing while the wave runs
    wave 34,996    engine peak RSS ≤ 300 MB with 35,000 terminals registered

Exits 0 when every benchmark completed (whether or not a target was met: the summary says),
1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    args: tuple[str, ...]
    quick: tuple[str, ...]
    json: bool = True  # writes --out FILE


BENCHES = (
    Bench(
        "wave",
        "The province wave: engine against the raw broker (scaling 1,000 → 35,000)",
        ("--sizes", "1000,5000,17498,34996", "--runs", "3"),
        ("--sizes", "1000", "--runs", "1"),
    ),
    Bench(
        "wave2",
        "Two engines sharing the acks (MQTT 5 shared subscription), 17,498 terminals",
        ("--sizes", "17498", "--runs", "3", "--engines", "2"),
        ("--sizes", "1000", "--runs", "1", "--engines", "2"),
    ),
    Bench(
        "storm",
        "Ack ingestion: the engine against mosquitto_sub, draining the same storm",
        ("--runs", "3"),
        ("--terminals", "1000", "--runs", "1"),
    ),
    Bench(
        "api_load",
        "Issue latency: 50 county offices issuing while the province wave is in flight",
        ("--runs", "3"),
        ("--terminals", "1000", "--offices", "10", "--runs", "1"),
    ),
    Bench(
        "reconnect",
        "Reconnect storm after a broker restart, with and without the engine",
        ("--runs", "3"),
        ("--terminals", "1000", "--runs", "1"),
    ),
    Bench(
        "chaos",
        "Faults during a province-wide dispatch",
        ("--terminals", "5000"),
        ("--terminals", "500"),
        json=False,
    ),
    Bench(
        "sms",
        "SMS through a rate-limited gateway",
        ("--recipients", "5000", "--rate", "1000"),
        ("--recipients", "500", "--rate", "500"),
        json=False,
    ),
    Bench(
        "scale",
        "Per-node figures for a national deployment: memory, connects, a bridge (docs/scale.md)",
        (),
        ("--quick",),
    ),
    Bench(
        "imports",
        "Imports of 100,000 recipients and terminals as jobs, /healthz polled meanwhile",
        ("--runs", "1"),
        ("--rows", "10000", "--runs", "1"),
    ),
)
SCRIPTS = {"wave": "province_wave", "wave2": "province_wave"}  # a benchmark run by another script


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(bench: Bench, out: Path, shown_out: str, quick: bool) -> dict[str, Any]:
    script = f"bench/{SCRIPTS.get(bench.name, bench.name)}.py"
    args = list(bench.quick if quick else bench.args)
    shown, argv = list(args), [sys.executable, str(ROOT / script), *args]
    if bench.json:
        shown += ["--out", f"{shown_out.rstrip('/')}/{bench.name}.json"]
        argv += ["--out", str(out / f"{bench.name}.json")]
    command = shlex.join([".venv/bin/python", script, *shown])
    say(f"\n== {bench.name}: {command}")
    started = time.monotonic()
    # The benchmark's progress goes to this terminal (stderr); its table comes back on stdout.
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)  # noqa: S603
    seconds = time.monotonic() - started
    say(done.stdout)
    return {
        "name": bench.name,
        "title": bench.title,
        "command": command,
        "status": done.returncode,
        "seconds": round(seconds, 1),
        "table": done.stdout.strip(),
    }


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def targets(out: Path) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met); met is None when the benchmark did not measure it."""
    rows: list[tuple[str, str, bool | None]] = []
    wave = _load(out, "wave")
    sizes = {r["terminals"]: r for r in wave["results"]} if wave else {}
    if (r := sizes.get(17498)) and r["median"]["ratio"] is not None:
        ratio = r["median"]["ratio"]
        raw, eng = r["median"]["raw_s"], r["median"]["engine_s"]
        rows.append(
            ("wave, 17,498 terminals: engine / raw ≤ 1.3",
             f"{ratio:.2f} ({eng:.3f} s / {raw:.3f} s)", ratio <= 1.3)
        )  # fmt: skip
    else:
        rows.append(("wave, 17,498 terminals: engine / raw ≤ 1.3", "not measured", None))
    small = sizes.get(1000, {}).get("median", {})
    extra, heard = small.get("extra_ms"), small.get("engine_first_heard_ms")
    rows.append(
        ("wave, 1,000 terminals: engine ≤ raw + 30 ms",
         "not measured" if extra is None else f"+{extra:.0f} ms",
         None if extra is None else extra <= 30)
    )  # fmt: skip
    rows.append(
        ("wave, 1,000 terminals: first terminal ≤ 20 ms after the 201",
         "not measured" if heard is None else f"{heard:.1f} ms",
         None if heard is None else heard <= 20)
    )  # fmt: skip
    storm = _load(out, "storm")
    share = storm["median"]["share"] if storm else None
    rows.append(
        ("storm: engine ack ingestion ≥ 70 % of mosquitto_sub",
         "not measured" if share is None else
         f"{share:.0%} ({storm['median']['engine_acks_per_s']:,.0f} against"  # type: ignore[index]
         f" {storm['median']['mosquitto_sub_msgs_per_s']:,.0f} per s)",  # type: ignore[index]
         None if share is None else share >= 0.70)
    )  # fmt: skip
    api = _load(out, "api_load")
    p99 = api["median"]["p99_ms"] if api else None
    rows.append(
        ("API: issue p99 ≤ 50 ms under load",
         "not measured" if p99 is None else f"{p99:.0f} ms", None if p99 is None else p99 <= 50)
    )  # fmt: skip
    if (r := sizes.get(34996)) and r["median"]["engine_peak_rss_mb"] is not None:
        rss = r["median"]["engine_peak_rss_mb"]
        rows.append(("engine peak RSS ≤ 300 MB, 34,996 terminals", f"{rss:.0f} MB", rss <= 300))
    else:
        rows.append(("engine peak RSS ≤ 300 MB, 34,996 terminals", "not measured", None))
    imports = _load(out, "imports")
    for kind in ("recipients", "terminals"):
        m = imports["median"][kind] if imports else {}
        seconds, p99 = m.get("seconds"), m.get("p99")
        rows.append(
            (f"imports: {imports['rows'] if imports else 100_000:,} {kind} ≤ 5 s, "
             "/healthz p99 ≤ 50 ms meanwhile",
             "not measured" if seconds is None or p99 is None else f"{seconds:.2f} s, {p99:.0f} ms",
             None if seconds is None or p99 is None else seconds <= 5 and p99 <= 50)
        )  # fmt: skip
    return rows


def summary(out: Path, ran: list[dict[str, Any]], quick: bool) -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "unknown",
    ) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    lines = [
        f"# Benchmarks, {datetime.now(UTC).isoformat(timespec='seconds')}",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}."
        + (" **Quick mode: small sizes.**" if quick else ""),
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for target, measured, met in targets(out):
        lines.append(
            f"| {target} | {measured} | {'—' if met is None else 'yes' if met else 'NO'} |"
        )
    for r in ran:
        state = "" if r["status"] == 0 else f" (exit status {r['status']})"
        lines += ["", f"## {r['title']}{state}", "", f"`{r['command']}` ({r['seconds']} s)", ""]
        lines.append(r["table"] or "(no table)")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-results", help="folder for JSON and summary")
    parser.add_argument("--only", help="comma-separated: " + ",".join(b.name for b in BENCHES))
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else {b.name for b in BENCHES}
    unknown = chosen - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from the list in --help")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ran = [run(b, out, args.out, args.quick) for b in BENCHES if b.name in chosen]
    text = summary(out, ran, args.quick)
    (out / "summary.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    say(f"written to {out / 'summary.md'}")
    return 0 if all(r["status"] == 0 for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
