"""The DLQ tooling: `python -m ingest_tasks.dlq list | show ID | replay | purge`.

Owns the command line and what people read: the table, the JSON lines, the text and hex views of
a payload, progress lines. Refuses to hold SQL (`queries` does) or to decide validity (replay
runs the pipeline). Exit codes: 0 done, 1 not found or a failure, 2 a usage or settings error.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC

from ingest_tasks.dlq import queries
from ingest_tasks.dlq.queries import Conn, DeadLetter, Filter, ReplayCounts
from ingest_tasks.errors import REASONS, TransientError
from ingest_tasks.logs import configure_logging
from ingest_tasks.settings import Settings, load_settings

Command = Callable[[Conn, argparse.Namespace, Settings], int]

TABLE = "{id:>10}  {time:<19}  {tenant:<16}  {reason:<17}  {topic:<40}  {size:>7}  {detail}"
DETAIL_WIDTH = 60
ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}


def escape(char: str) -> str:
    code = ord(char)
    if char in ESCAPES:
        return ESCAPES[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with control and other non-printable characters written as escapes."""
    return "".join(c if c.isprintable() or (keep_newlines and c == "\n") else escape(c) for c in text)


def clip(text: str | None, width: int) -> str:
    shown = printable(text or "-")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def payload_text(payload: bytes) -> str:
    """The payload as UTF-8; bytes that are not UTF-8 appear as \\xNN."""
    return printable(payload.decode("utf-8", errors="backslashreplace"), keep_newlines=True)


def hex_dump(payload: bytes) -> Iterator[str]:
    """Lines like `xxd`'s: offset, 16 bytes in groups of two, and the printable ASCII."""
    for offset in range(0, len(payload), 16):
        row = payload[offset : offset + 16]
        groups = " ".join(row[i : i + 2].hex() for i in range(0, len(row), 2))
        ascii_ = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in row)
        yield f"{offset:08x}: {groups:<39}  {ascii_}"


def table_row(d: DeadLetter) -> str:
    return TABLE.format(
        id=d.id, time=d.ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), tenant=clip(d.tenant_id, 16),
        reason=d.reason, topic=clip(d.topic, 40), size=len(d.payload), detail=clip(d.detail, DETAIL_WIDTH),
    )


def json_line(d: DeadLetter) -> str:
    return json.dumps({
        "id": d.id, "ts": d.ts.astimezone(UTC).isoformat(), "tenant_id": d.tenant_id, "topic": d.topic,
        "reason": d.reason, "detail": d.detail, "payload_size": len(d.payload),
        "payload_base64": base64.b64encode(d.payload).decode("ascii"),
    })


def describe(d: DeadLetter) -> Iterator[str]:
    chunk = "-" if d.chunk_id is None else f"{d.chunk_id} message {d.chunk_seq}"
    yield from (
        f"id        {d.id}", f"time      {d.ts.astimezone(UTC).isoformat()}",
        f"tenant    {printable(d.tenant_id or '- (none: the topic named no tenant)')}",
        f"topic     {printable(d.topic)}", f"reason    {d.reason}", f"detail    {printable(d.detail or '-')}",
        f"chunk     {printable(chunk)}", f"size      {len(d.payload)} bytes",
        "", "payload as text (UTF-8, non-printable characters escaped):",
    )
    yield payload_text(d.payload) if d.payload else "(empty)"
    yield from ("", "payload as hex:", *hex_dump(d.payload))


def run_list(conn: Conn, args: argparse.Namespace, _: Settings) -> int:
    shown = 0
    if not args.json:
        print(TABLE.format(id="id", time="time (UTC)", tenant="tenant", reason="reason", topic="topic",
                           size="bytes", detail="detail"))
    for d in queries.iter_dead_letters(conn, to_filter(args), args.limit):
        print(json_line(d) if args.json else table_row(d))
        shown += 1
    if not args.json:
        print(f"({shown} dead letter{'' if shown == 1 else 's'})", file=sys.stderr)
    return 0


def run_show(conn: Conn, args: argparse.Namespace, _: Settings) -> int:
    found = queries.fetch_dead_letter(conn, args.id)
    if found is None:
        print(f"dlq: no dead letter with id {args.id}", file=sys.stderr)
        return 1
    for line in describe(found):
        print(line)
    return 0


def run_replay(conn: Conn, args: argparse.Namespace, settings: Settings) -> int:
    def progress(counts: ReplayCounts, total: int) -> None:
        if total > args.batch:
            print(f"replayed {counts.done}/{total}: {summary(counts)}", file=sys.stderr)

    counts = queries.replay_dead_letters(
        conn, to_filter(args), settings.max_payload_bytes, args.batch, progress
    )
    print(f"replay: selected={counts.done} {summary(counts)}")
    if counts.refused:
        print(f"dlq: {counts.refused} valid message(s) refused by the database stay in the DLQ",
              file=sys.stderr)
    return 1 if counts.refused else 0


def summary(counts: ReplayCounts) -> str:
    return f"landed={counts.landed} still_invalid={counts.still_invalid} refused={counts.refused}"


def run_purge(conn: Conn, args: argparse.Namespace, _: Settings) -> int:
    def progress(removed: int, total: int) -> None:
        if total > args.batch:
            print(f"purged {removed}/{total}", file=sys.stderr)

    removed = queries.purge(conn, to_filter(args), args.batch, progress)
    print(f"purge: removed={removed}")
    return 0


COMMANDS: dict[str, Command] = {"list": run_list, "show": run_show, "replay": run_replay, "purge": run_purge}


def to_filter(args: argparse.Namespace) -> Filter:
    return Filter(args.tenant, args.reason, args.older_than, tuple(args.ids))


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of days, 0 or more (0.5: 12 hours), got {text!r}")
    return value


def filter_options() -> argparse.ArgumentParser:
    """The filters `list`, `replay` and `purge` share; rows must match every one given."""
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--tenant", metavar="T", help="only this tenant's dead letters")
    filters.add_argument("--reason", metavar="R", choices=REASONS,
                         help=f"only this reason: {', '.join(REASONS)}")
    filters.add_argument("--older-than", metavar="DAYS", type=days, help="only rows older than DAYS days")
    filters.add_argument("--id", metavar="N", type=positive_int, action="append", default=[], dest="ids",
                         help="only this id (repeatable)")
    return filters


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ingest_tasks.dlq", description="Inspect, replay and "
                                     "purge the dead-letter queue (ingest_errors) as the DATABASE_URL role.")
    filters = filter_options()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", parents=[filters], help="a table of dead letters, oldest id first")
    listing.add_argument("--json", action="store_true", help="one JSON object per line instead")
    listing.add_argument("--limit", metavar="N", type=positive_int, help="at most N rows (default: all)")
    show = commands.add_parser("show", help="one dead letter, with its payload as text and hex")
    show.add_argument("id", metavar="ID", type=positive_int)
    replay = commands.add_parser("replay", parents=[filters], help="store again what now validates")
    replay.add_argument("--batch", metavar="N", type=positive_int, default=queries.REPLAY_BATCH)
    purge = commands.add_parser("purge", parents=[filters], help="delete dead letters (a filter or --all)")
    purge.add_argument("--all", action="store_true", help="allow a purge without any filter")
    purge.add_argument("--batch", metavar="N", type=positive_int, default=queries.PURGE_BATCH)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "purge" and to_filter(args).empty and not args.all:
        print("dlq purge: refusing to delete every dead letter without a filter; add --all to mean it",
              file=sys.stderr)
        return 2
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        with queries.session(settings.database_url) as conn:
            return COMMANDS[args.command](conn, args, settings)
    except TransientError as exc:
        print(f"dlq: database unavailable: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dlq: interrupted; batches already committed stay done", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `list | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
