import argparse
import os

from django.core.management.base import BaseCommand, CommandError

from outbox_relay import admin_cli, operations
from outbox_relay.config import DEFAULT_FRONTEND, ConfigError

from ._relay import django_dsn


class Command(BaseCommand):
    help = "Re-publish stored outbox events by pos range, time window or topic (they keep their pos)."

    def add_arguments(self, parser):
        admin_cli.add_selection_arguments(parser)
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--rate", type=float)
        parser.add_argument("--broker", default=os.environ.get("OUTBOX_RELAY_BROKER_URL", DEFAULT_FRONTEND))
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts):
        ns = argparse.Namespace(cmd="replay", **{k: opts[k] for k in (
            "from_pos", "to_pos", "since", "until", "topic", "dry_run", "rate", "broker", "no_progress")})
        try:
            admin_cli.run(ns, django_dsn(), out=self.stdout)
        except (ConfigError, operations.BrokerRefused) as exc:
            raise CommandError(str(exc)) from None
