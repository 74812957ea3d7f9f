import argparse

from django.core.management.base import BaseCommand

from outbox_relay import admin_cli

from ._relay import django_dsn


class Command(BaseCommand):
    help = "Delete published outbox rows older than a retention period (never an unpublished row)."

    def add_arguments(self, parser):
        admin_cli.add_prune_arguments(parser)

    def handle(self, *args, **opts):
        admin_cli.run(argparse.Namespace(cmd="prune", **opts), django_dsn(), out=self.stdout)
