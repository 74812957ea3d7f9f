import argparse

from django.core.management.base import BaseCommand

from outbox_relay import admin_cli, operations

from ._relay import django_dsn


class Command(BaseCommand):
    help = "Delete published outbox rows older than a retention period (never an unpublished row)."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, type=operations.parse_duration)
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, **opts):
        ns = argparse.Namespace(cmd="prune", older_than=opts["older_than"], dry_run=opts["dry_run"])
        admin_cli.run(ns, django_dsn(), out=self.stdout)
