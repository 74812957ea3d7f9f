from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from portal.apitokens.services import create_token


class Command(BaseCommand):
    help = "Create an API token for a user and print its secret (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")

    def handle(self, *args, username: str, name: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no such user: {username}")
        token, key = create_token(user, name)
        self.stdout.write(key)
