"""The API against its own OpenAPI document: schemathesis generates requests from
``GET /api/v1/openapi.json`` (valid ones, and invalid ones it derives from the same schemas),
sends them to a real engine process (real Redis and broker, SMS and drills switched on) as a
province office, as a county office and with no token, and fails on any 5xx, any status the
document does not declare, any answer that breaks its schema or content type, a 405 without
``Allow``, an invalid request taken, or a request taken without a token.

``make test`` runs it on a small budget (``EBD_FUZZ_EXAMPLES``, default 6 cases per operation,
``EBD_FUZZ_PHASES`` examples and fuzzing); ``make fuzz`` on a large one with every phase.
``EBD_FUZZ_SEED`` replays a run.

Not checked: that every schema-valid request succeeds (``positive_data_acceptance``). Much of
what the engine refuses cannot be said in a schema: a region outside the office's
jurisdiction, a region code of the right shape that does not exist, a drill on a holiday, an
``expires`` already past. Those are answered 403/404/409/422, declared for each operation.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import PIPE, STDOUT

import pytest

from tests.integration.engine import drill_settings
from tests.support.engine_process import EngineProcess
from tests.support.sms_sandbox import GenericGatewayServer

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES = int(os.environ.get("EBD_FUZZ_EXAMPLES", "6"))
# The small budget (``make test``, under a minute) fuzzes each operation with valid and invalid
# requests; ``make fuzz`` adds the coverage phase (every boundary of every schema) and stateful
# sequences (issue an alert or add a drill, then read, cancel, move and run it through the
# document's links).
PHASES = os.environ.get("EBD_FUZZ_PHASES", "examples,fuzzing")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "allow_header_conformance",
    "missing_required_header",
    "ignored_auth",
)
IDENTITIES = {
    "province": "tok-province",
    "county": "tok-gulou",
    "anonymous": None,
}


@pytest.fixture
async def fuzz_engine(tmp_path: Path, redis_url: str, mqtt_url: str) -> AsyncIterator[str]:
    """An engine process with SMS (a sandbox gateway) and drills; its base URL."""
    async with GenericGatewayServer() as gateway:
        engine = EngineProcess(
            tmp_path,
            redis_url=redis_url,
            mqtt_url=mqtt_url,
            client_id=f"fuzz-{os.getpid()}",
            sms={"gateways": [gateway.settings("gw1")]},
            drills=drill_settings(),
        )
        # The fuzzer sends bad tokens on purpose; the throttle would soon answer everything
        # with 429 (declared, but then nothing behind it would be tested).
        config = engine.config_path.read_text(encoding="utf-8")
        engine.config_path.write_text(
            config.replace("[api]\n", "[api]\nauth_failures_per_minute = 100000\n", 1),
            encoding="utf-8",
        )
        async with engine:
            yield engine.base_url


async def fuzz(base_url: str, token: str | None, report: Path, examples: int = EXAMPLES) -> str:
    """Runs schemathesis against the engine at ``base_url``: its report of every failure
    found, or "" when it found none."""
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{base_url}/api/v1/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        PHASES,
        "--max-examples",
        str(examples),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--seed",
        os.environ.get("EBD_FUZZ_SEED", "20261127"),
        "--no-shrink",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    # No EBD_ variable of the developer's reaches the runner; it needs none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBD_")}
    # A child process, awaited: the sandbox gateway runs on this test's event loop.
    runner = await asyncio.create_subprocess_exec(
        *command, stdout=PIPE, stderr=STDOUT, env=env, cwd=report.parent
    )
    out, _ = await runner.communicate()
    text = out.decode(errors="replace")
    if runner.returncode != 0 or "Tested:" not in text:
        return f"schemathesis exit {runner.returncode}:\n{text[-20000:]}"
    return ""


@pytest.mark.timeout(3600)
async def test_api_keeps_its_document(fuzz_engine: str, tmp_path: Path) -> None:
    """The three identities at once, one runner each: the engine is what is slow to start."""
    found = await asyncio.gather(
        *(fuzz(fuzz_engine, token, tmp_path / name) for name, token in IDENTITIES.items())
    )
    failed = {name: report for name, report in zip(IDENTITIES, found, strict=True) if report}
    assert not failed, "\n\n".join(f"=== as {name}:\n{text}" for name, text in failed.items())
