#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.management import execute_from_command_line

    from portal.config import PortalConfig
    from portal.provenance import configure_for_command
    from runtime.settings import exit_on_error

    if os.environ["DJANGO_SETTINGS_MODULE"] == "portal.settings":
        # A bad setting: its one line and exit code 2, not a traceback ending in ImproperlyConfigured.
        exit_on_error("manage.py", PortalConfig, os.environ)
    # Writes made by a management command are recorded with source "shell".
    configure_for_command(sys.argv)
    execute_from_command_line(sys.argv)
