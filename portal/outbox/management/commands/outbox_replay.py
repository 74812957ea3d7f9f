import argparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from outbox_relay import admin_cli, operations
from runtime.settings import SettingError

from ._relay import django_dsn


class Command(BaseCommand):
    help = "Re-publish stored outbox events by pos range, time window or topic (they keep their pos)."

    def add_arguments(self, parser):
        admin_cli.add_replay_arguments(parser)

    def handle(self, *args, **opts):
        try:
            admin_cli.run(argparse.Namespace(cmd="replay", **opts), django_dsn(), out=self.stdout,
                          config=settings.OUTBOX_REPLAY)
        except (SettingError, operations.BrokerRefused) as exc:
            raise CommandError(str(exc)) from None
