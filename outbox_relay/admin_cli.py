"""`outbox-admin status|replay|prune`: the operations of operations.py from a shell.

DATABASE_URL (or the embedded server) says which database; replay publishes to
OUTBOX_RELAY_BROKER_URL (the broker frontend) unless --broker is given, with the relay's
publisher key (OUTBOX_RELAY_CURVE_SECRET_KEY or _FILE, OUTBOX_RELAY_BROKER_PUBLIC_KEY).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from outbox_relay import operations
from outbox_relay.config import AdminConfig, publisher_keys
from runtime.database import embedded_url
from runtime.settings import SettingError, exit_on_error, refuse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outbox-admin", description="Outbox relay operations: status, replay, prune.")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_status_arguments(sub.add_parser("status", help="leader, backlog, lag, positions, heartbeat age, poison rows"))
    add_replay_arguments(sub.add_parser("replay", help="re-publish stored events (they keep their pos)"))
    add_prune_arguments(sub.add_parser("prune", help="delete published rows older than a retention period"))
    return p


# The arguments of each command, shared with the `manage.py outbox_*` commands.

def _typed(parse):
    """An argparse type from a parser that raises ValueError: its message, not "invalid
    parse_rate value", is what the user reads."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse.__name__
    return convert


def add_status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    add_selection_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="show what would go out; send nothing")
    p.add_argument("--rate", type=_typed(operations.parse_rate), help="at most this many events per second, e.g. 100/s")
    p.add_argument("--broker", help="broker frontend to publish to (default: OUTBOX_RELAY_BROKER_URL, whose"
                                    f" default is {AdminConfig.broker_url})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def add_prune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--older-than", required=True, type=_typed(operations.parse_duration), help="e.g. 30d, 12h")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")


def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from-pos", type=int, help="first pos (inclusive)")
    p.add_argument("--to-pos", type=int, help="last pos (inclusive)")
    p.add_argument("--since", type=_typed(operations.parse_time), help="written at or after (ISO-8601, UTC if no zone)")
    p.add_argument("--until", type=_typed(operations.parse_time), help="written before (ISO-8601)")
    p.add_argument("--topic", help="only this topic, e.g. checklist:42")


def selection(args: argparse.Namespace) -> operations.Selection:
    return operations.Selection(from_pos=args.from_pos, to_pos=args.to_pos, since=args.since,
                                until=args.until, topic=args.topic)


def _say(out, text: str) -> None:
    """One line in one write: Django's OutputWrapper (manage.py) ends each write() with a
    newline unless it has one, so print()'s separate newline made every line double-spaced."""
    out.write(text + "\n")


def run(args: argparse.Namespace, dsn: str, out=sys.stdout, config: AdminConfig = AdminConfig()) -> int:
    """Run one command; `config` has the broker and the publisher keys a replay uses.
    SettingError (replay without its keys) and operations.BrokerRefused are the caller's
    to report."""
    if args.cmd == "status":
        s = operations.status(dsn)
        _say(out, json.dumps(s.as_dict()) if args.json else operations.format_status(s))
    elif args.cmd == "replay":
        sel = selection(args)
        if args.dry_run:
            result, lines = operations.preview(dsn, sel)
            for line in lines:
                _say(out, line)
            if result.count > len(lines):
                _say(out, f"... and {result.count - len(lines)} more")
            if result.count:
                _say(out, f"dry run: would replay {result.count} events, pos {result.first_pos}..{result.last_pos},"
                          f" {len(result.topics)} topics")
            else:
                _say(out, "dry run: would replay 0 events (nothing matches)")
        else:
            result = operations.replay(dsn, args.broker or config.broker_url, sel, curve=publisher_keys(config.curve),
                                       rate=args.rate, progress=not args.no_progress)
            _say(out, f"replayed {result.count} events, pos {result.first_pos}..{result.last_pos},"
                      f" {len(result.topics)} topics")
    elif args.cmd == "prune":
        r = operations.prune(dsn, args.older_than, dry_run=args.dry_run)
        verb = "would delete" if r.dry_run else "deleted"
        _say(out, f"{verb} {r.deleted} published rows sequenced before {r.cutoff.isoformat()}")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = exit_on_error("outbox-admin", AdminConfig, os.environ)
    try:
        code = run(args, config.database_url or embedded_url(), config=config)
    except SettingError as exc:
        refuse("outbox-admin", exc)
    except operations.BrokerRefused as exc:
        print(f"outbox-admin: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
