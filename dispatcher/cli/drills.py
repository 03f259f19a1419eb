"""``ebd drills``: plan, edit, run, report and review the annual drills through the API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatcher.cli.client import ApiClient
from dispatcher.cli.lang import current
from dispatcher.settings import load_settings


def cmd_drills_plan(args: argparse.Namespace) -> int:
    if args.dry_run:
        from drills.plan import check_plan, plan_year, to_csv, to_json

        settings = load_settings(Path(args.config)) if args.config else load_settings(None)
        from dispatcher.app import load_tree

        tree = load_tree(settings, Path(args.config) if args.config else None)
        region = args.region or "35"
        drills = plan_year(tree, region, args.year, settings.drills)
        problems = check_plan(tree, region, args.year, settings.drills, drills)
        from drills.exports import BOM

        # As the API's CSV: a byte order mark for Excel, headers in the language of ebd.
        text = BOM + to_csv(drills, current()) if args.output == "csv" else to_json(drills)
        print(text, end="")
        for problem in problems:
            print(f"ebd: plan problem: {problem}", file=sys.stderr)
        return 1 if problems else 0
    body = {"year": args.year, **({"region": args.region} if args.region else {})}
    result = ApiClient.of(args).call("POST", "/api/v1/drills/plan", body)
    print(
        f"{result['year']} {result['region']}: {result['planned']} drills planned, "
        f"{result['already_planned']} already planned / 新计划 {result['planned']} 次演练"
        + (f" ({result['first'][:10]} … {result['last'][:10]})" if result["first"] else "")
    )
    return 0


def _drill_query(extra: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    query = {k: v for k, v in extra.items() if v not in (None, "")}
    return ("?" + urlencode(query)) if query else ""


def _show(
    args: argparse.Namespace,
    path: str,
    query: dict[str, Any],
    table: Callable[[Any], str] | None = None,
) -> int:
    """GET ``path`` with ``query`` and print it as ``args.output`` asks: the API's own CSV, the
    JSON indented, or the JSON through ``table`` (JSON too without one)."""
    if args.output == "csv":
        csv_query = {**query, "format": "csv", "lang": current()}
        print(ApiClient.of(args).text(path + _drill_query(csv_query)), end="")
        return 0
    body = ApiClient.of(args).call("GET", path + _drill_query(query))
    if args.output == "json" or table is None:
        print(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        print(table(body))
    return 0


def _drills_table(body: Any) -> str:
    """The ``GET /api/v1/drills`` answer as a table: the count, then a line a drill."""
    lines = [f"{body['total']} drills / 演练 {body['total']} 次"]
    lines.extend(
        f"{d['id']:<28}{d['scheduled_at'][:16]:<18}{d['status']:<11}"
        f"{d['county_name']}{d['township_name']}"
        for d in body["drills"]
    )
    return "\n".join(lines)


def cmd_drills_list(args: argparse.Namespace) -> int:
    query = {"year": args.year, "region": args.region, "status": args.status}
    return _show(args, "/api/v1/drills", query, _drills_table)


def cmd_drills_export(args: argparse.Namespace) -> int:
    query = {"year": args.year, "region": args.region, "format": "csv", "lang": current()}
    if args.output == "csv":
        print(ApiClient.of(args).text("/api/v1/drills" + _drill_query(query)), end="")
        return 0
    del query["format"], query["lang"]
    body = ApiClient.of(args).call("GET", "/api/v1/drills" + _drill_query(query))
    print(json.dumps(body["drills"], ensure_ascii=False, indent=2))
    return 0


def cmd_drills_add(args: argparse.Namespace) -> int:
    body = {"township": args.township, "at": args.at, "reason": args.reason}
    drill = ApiClient.of(args).call("POST", "/api/v1/drills", body)
    print(f"{drill['id']}: {drill['scheduled_at']} {drill['township_name']} (added)")
    return 0


def cmd_drills_move(args: argparse.Namespace) -> int:
    body = {"at": args.to, "reason": args.reason}
    drill = ApiClient.of(args).call("POST", f"/api/v1/drills/{args.id}/move", body)
    print(f"{drill['id']}: moved to {drill['scheduled_at']}")
    return 0


def cmd_drills_cancel(args: argparse.Namespace) -> int:
    drill = ApiClient.of(args).call(
        "POST", f"/api/v1/drills/{args.id}/cancel", {"reason": args.reason}
    )
    print(f"{drill['id']}: {drill['status']}")
    return 0


def cmd_drills_run_now(args: argparse.Namespace) -> int:
    body = {"reason": args.reason}
    drill = ApiClient.of(args).call("POST", f"/api/v1/drills/{args.id}/run", body)
    print(f"{drill['id']}: {drill['status']}, alert {drill['alert_id']}")
    return 0


def cmd_drills_report(args: argparse.Namespace) -> int:
    from drills.report import DrillReport, to_table

    return _show(
        args,
        f"/api/v1/drills/{args.id}/report",
        {},
        lambda body: to_table(DrillReport.model_validate(body), current()),
    )


def cmd_drills_compliance(args: argparse.Namespace) -> int:
    from drills.compliance import Compliance, to_table

    query = {"year": args.year, "region": args.region}
    return _show(
        args,
        "/api/v1/drills/compliance",
        query,
        lambda body: to_table(Compliance.model_validate(body)),
    )


def cmd_drills_acks(args: argparse.Namespace) -> int:
    query = {
        "drill": args.drill,
        "township": args.township,
        "terminal": args.terminal,
        "since": args.since,
        "until": args.until,
        "region": args.region,
    }
    return _show(args, "/api/v1/drills/acks", query)
