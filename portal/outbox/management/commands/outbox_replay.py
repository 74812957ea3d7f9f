import argparse

from django.core.management.base import BaseCommand

from outbox_relay import admin_cli

from ._relay import django_dsn


class Command(BaseCommand):
    help = "Re-publish stored outbox events by pos range, time window or topic (they keep their pos)."

    def add_arguments(self, parser):
        admin_cli.add_replay_arguments(parser)

    def handle(self, *args, **opts):
        admin_cli.run(argparse.Namespace(cmd="replay", **opts), django_dsn(), out=self.stdout)
