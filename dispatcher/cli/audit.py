"""``ebd audit``: verify the audit log's chain and export it, through the API (province token)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlencode

from dispatcher.cli.client import ApiClient


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """0 when the chain is intact; 1, each problem on a line of its own, when it is not."""
    result = ApiClient.of(args).call("GET", "/api/v1/audit/verify")
    head = result["head"]
    if result["ok"]:
        print(
            f"audit log intact: {result['records']} records, head {head['seq']} {head['hash']}"
            " / 审计日志完整"
        )
        return 0
    print(
        f"audit log NOT intact: {result['problem_count']} problems in {result['records']} "
        f"records (head {head['seq']} {head['hash']}) / 审计日志被篡改",
        file=sys.stderr,
    )
    for problem in result["problems"]:
        print(f"  seq {problem['seq']}: {problem['kind']}: {problem['message']}", file=sys.stderr)
    if result["problem_count"] > len(result["problems"]):
        print(f"  … {result['problem_count'] - len(result['problems'])} more", file=sys.stderr)
    return 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    """The log (or a range) as NDJSON to ``--output`` (stdout by default)."""
    query = {k: v for k, v in (("since", args.since), ("until", args.until)) if v}
    path = "/api/v1/audit/export" + ("?" + urlencode(query) if query else "")
    client = ApiClient.of(args)
    if args.output in (None, "-"):
        client.save(path, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    target = Path(args.output)
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as out:
            written = client.save(path, out)
        # Only a complete export takes the name: a broken one must not pass for the log.
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    print(f"{written} bytes written to {target}", file=sys.stderr)
    return 0
