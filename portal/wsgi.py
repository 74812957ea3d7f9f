import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

# gunicorn runs no system checks: refuse development secrets here (portal/deploychecks.py).
from portal.deploychecks import refuse_to_serve  # noqa: E402

refuse_to_serve()
