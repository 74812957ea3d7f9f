import os

from django.core.wsgi import get_wsgi_application

from portal.config import PortalConfig
from runtime.settings import SettingError, read

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
try:
    read(PortalConfig, os.environ)  # a bad setting stops the server with its one line, not a traceback
except SettingError as exc:
    raise SystemExit(f"portal: refusing to start: {exc}") from None
application = get_wsgi_application()

# gunicorn runs no system checks: refuse development secrets here (portal/deploychecks.py).
from portal.deploychecks import refuse_to_serve  # noqa: E402

refuse_to_serve()
