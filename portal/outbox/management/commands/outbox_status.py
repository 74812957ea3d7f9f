import argparse

from django.core.management.base import BaseCommand

from outbox_relay import admin_cli

from ._relay import django_dsn


class Command(BaseCommand):
    help = "Relay status: leader, backlog, lag, positions, heartbeat age, poison rows."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **opts):
        admin_cli.run(argparse.Namespace(cmd="status", json=opts["json"]), django_dsn(), out=self.stdout)
