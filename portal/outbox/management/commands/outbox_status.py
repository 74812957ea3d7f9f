import argparse

from django.core.management.base import BaseCommand

from outbox_relay import admin_cli

from ._relay import django_dsn


class Command(BaseCommand):
    help = "Relay status: leader, backlog, lag, positions, heartbeat age, poison rows."

    def add_arguments(self, parser):
        admin_cli.add_status_arguments(parser)

    def handle(self, *args, **opts):
        admin_cli.run(argparse.Namespace(cmd="status", **opts), django_dsn(), out=self.stdout)
