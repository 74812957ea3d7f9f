#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.management import execute_from_command_line

    from portal.provenance import configure_for_command

    # Writes made by a management command are recorded with source "shell".
    configure_for_command(sys.argv)
    execute_from_command_line(sys.argv)
