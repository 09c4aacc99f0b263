#!/usr/bin/env python
"""Django's command-line utility. With no DATABASE_URL / REDIS_URL it starts the embedded servers."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from ops import local_services

    if local_services.uses_local_services() and sys.argv[1:2] != ["local_services"]:
        # Reuse running servers, or start them for this command's lifetime (make run included).
        local_services.ensure_started()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
