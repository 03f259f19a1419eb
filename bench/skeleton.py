"""A benchmark's frame, from its command line to its printed table and JSON file. A benchmark
is a ``Benchmark`` subclass holding only its own flags, measurement and report; its script
ends with ``sys.exit(main(ThatBenchmark))``.

``main`` parses the arguments (the benchmark's own, then ``--out`` for one that writes JSON,
``--keep``, and the hidden ``--sim-child`` that makes the script the simulator child of
``harness.SimChild``), makes the temporary folder and runs the measurement so that SIGTERM
and Ctrl-C stop it as an error would: its ``finally`` blocks and the atexit nets stop
everything it started. Whatever happened, it then writes the JSON result, prints the table on
stdout (progress goes to stderr: ``say``) and removes the folder unless ``--keep`` or the run
was not complete.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TextIO

import structlog
from harness import serve_terminals

from dispatcher.core.signing import Keyring
from receiver.simulator import SimTerminal, Simulator


def say(text: str) -> None:
    """Progress goes to stderr: stdout carries the benchmark's table."""
    print(text, file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_until_done(main: Coroutine[Any, Any, int]) -> int:
    """Run a benchmark's main coroutine; SIGTERM and Ctrl-C stop it the same way, its
    ``finally`` blocks and the atexit nets stopping everything it started."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130


class Benchmark(abc.ABC):
    """One benchmark: what it measures, into its own attributes, and how it reports them."""

    # The JSON's "benchmark" and the temporary folder's prefix.
    name: ClassVar[str]
    # The default of --out; None: the benchmark writes no JSON, its table is its report.
    out: ClassVar[str | None] = None

    def __init_subclass__(cls, *, name: str, out: str | None = None, **kwargs: Any) -> None:
        # Given in the class line (``class Wave(Benchmark, name="wave", out=...)``): a benchmark
        # is named where it is declared.
        super().__init_subclass__(**kwargs)
        cls.name = name
        cls.out = out

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    @classmethod
    @abc.abstractmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the benchmark's own flags."""

    @classmethod
    def misuse(cls, args: argparse.Namespace) -> str | None:
        """What is wrong with the arguments beyond their types, if anything."""
        return None

    @staticmethod
    def simulator(
        terminals: list[SimTerminal], mqtt_url: str, out: TextIO, **options: Any
    ) -> tuple[Simulator, Callable[[], int] | None]:
        """The simulator child's simulator, and how many of its terminals are up if it
        reports progress (``out`` is the events' stream); ``options``: the CA and keyring."""
        return Simulator(terminals, mqtt_url, **options), None

    @property
    def script(self) -> Path:
        """The benchmark's script: what ``harness.SimChild`` runs with ``--sim-child``."""
        path = sys.modules[type(self).__module__].__file__
        assert path is not None
        return Path(path).resolve()

    @abc.abstractmethod
    async def measure(self, folder: Path) -> None:
        """Start what it needs in ``folder``, measure, and stop it all again; what it has
        measured so far must be in its attributes whenever this raises."""

    def results(self) -> dict[str, Any]:
        """The JSON result's fields after benchmark, when and machine."""
        return {}

    def table(self) -> str:
        """What goes to stdout at the end ("": nothing)."""
        return ""

    @abc.abstractmethod
    def complete(self) -> bool:
        """Whether every run measured what it should (the exit status and the kept folder)."""


async def _run(bench: Benchmark) -> int:
    args = bench.args
    folder = Path(tempfile.mkdtemp(prefix=f"ebd-{bench.name.replace('_', '-')}-"))
    failed = False
    try:
        await bench.measure(folder)
    except Exception as exc:  # what was measured before it is still reported
        say(f"! the benchmark failed: {exc!r}; logs in {folder}")
        failed = True
    finally:
        if bench.out is not None:
            report = {
                "benchmark": bench.name,
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                **bench.results(),
            }
            text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
            await asyncio.to_thread(Path(args.out).write_text, text, encoding="utf-8")
        if table := bench.table():
            print(table, flush=True)
        if bench.out is not None:
            say(f"\nwritten to {args.out}")
        ok = not failed and bench.complete()
        if args.keep or not ok:
            say(f"logs and data kept in {folder}")
        else:
            await asyncio.to_thread(shutil.rmtree, folder, True)
    return 0 if ok else 1


def _sim_child(bench: type[Benchmark], spec_path: Path) -> int:
    # stdout carries the events to the parent; the simulator's own logs go to stderr.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    terminals = [
        SimTerminal(t["id"], t["region"], password=t.get("password")) for t in spec["terminals"]
    ]
    access = {"ca_pem": spec["ca_pem"], "keyring": Keyring.from_json(spec["keyring"])}

    async def child() -> None:
        sim, up = bench.simulator(terminals, spec["mqtt"], sys.stdout, **access)
        await serve_terminals(sim, spec["timeout"], sys.stdout, up)

    asyncio.run(child())
    return 0


def main(bench: type[Benchmark]) -> int:
    """Run ``bench`` as its script's command; the exit status."""
    doc = sys.modules[bench.__module__].__doc__ or ""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    bench.arguments(parser)
    if bench.out is not None:
        parser.add_argument("--out", default=bench.out, help="JSON result file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument("--sim-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sim_child:
        return _sim_child(bench, Path(args.sim_child))
    problem = bench.misuse(args)
    if problem is not None:
        parser.error(problem)
    # Only what goes wrong: the simulator logs every dropped link at debug level.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return run_until_done(_run(bench(args)))
