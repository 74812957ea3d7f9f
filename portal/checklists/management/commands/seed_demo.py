from django.core.management.base import BaseCommand

from ..demo import TITLE, seed


class Command(BaseCommand):
    help = "Create the demo users (alice, bob), a shared checklist and an admin; safe to run again."

    def handle(self, *args, **options):
        credentials = seed()
        self.stdout.write(f'Demo data ready: checklist "{TITLE}" shared by alice (owner) and bob (editor).')
        for username, password in credentials.items():
            self.stdout.write(f"  {username} / {password}")
