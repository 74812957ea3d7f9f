"""Django settings for the Cloud Checklist portal.

Every environment variable is read once, here, by the settings reader (portal/config.py
lists them; README, "Configuration reference", documents them). A bad or unknown one
raises ImproperlyConfigured with its one-line reason, before anything is served.
"""
import hashlib
import os
import tempfile
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from outbox_relay.config import AdminConfig
from portal.config import PortalConfig
from portal.cspsources import connect_origins
from runtime.database import django_database, embedded_url
from runtime.settings import SettingError, read

BASE_DIR = Path(__file__).resolve().parent.parent

try:
    _config = read(PortalConfig, os.environ)
except SettingError as exc:
    raise ImproperlyConfigured(str(exc)) from None

# The defaults are for development only: with DEBUG off, portal/deploychecks.py refuses them.
SECRET_KEY = _config.secret_key
DEBUG = _config.debug

ALLOWED_HOSTS = list(_config.allowed_hosts)

# --- HTTPS (docs/security.md, "Web and transport defences") ---
# PORTAL_HTTPS=1: browsers reach the portal over TLS, terminated here or by a proxy in
# front that sets X-Forwarded-Proto (and overwrites a client's). Cookies are then sent
# over TLS only, browsers are told to use TLS for a year (HSTS) and plain HTTP is
# redirected. On by default when DEBUG is off; `make run` (DEBUG on, plain HTTP) leaves
# it off; compose.yaml asks for it explicitly.
HTTPS = (not DEBUG) if _config.https is None else _config.https
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_HSTS_SECONDS = (31_536_000 if HTTPS else 0) if _config.hsts_seconds is None else _config.hsts_seconds
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "portal.adminsite.PortalAdminConfig",  # django.contrib.admin with a hardened site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc as static files, not from a CDN
    "csp",
    "portal.outbox",
    "portal.checklists",
    "portal.apitokens",
    "axes",  # login lockout; see the "Brute force" block below
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # serves collected static under gunicorn (compose.yaml)
    "csp.middleware.CSPMiddleware",  # Content-Security-Policy on every response (below)
    # Before anything reads a value into a query: see portal/inputguard.py.
    "portal.inputguard.RefuseUnstorableInput",
    "portal.cookies.SessionCookieSanitizer",  # before sessions: see portal/cookies.py
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication (it names the session user); see portal/provenance.py.
    "portal.provenance.ProvenanceMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out authentication into its response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "portal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The server every part of the portal uses (the outbox commands and admin too: portal/outbox).
DATABASE_URL = _config.database_url or embedded_url()
# portal.pgbackend: Django's backend, with a health check that needs no round trip. The
# sessions say whose they are in pg_stat_activity, as the daemons' do (docs/operations.md).
DATABASES = {"default": {**django_database(DATABASE_URL), "ENGINE": "portal.pgbackend",
                         "OPTIONS": {"application_name": "portal"}}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "portal" / "static", ("vendor", BASE_DIR / "node_modules" / "sockjs-client" / "dist")]

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": _config.log_level},
}

# --- Brute force (docs/security.md, "Web and transport defences") ---
# Addresses (or CIDRs) of reverse proxies whose X-Forwarded-For is believed
# (portal/clientip.py); nobody else's is.
PORTAL_TRUSTED_PROXIES = _config.trusted_proxies

# django-axes: after AXES_FAILURE_LIMIT failed logins for one username, or from one client
# address, every login for it (right password included) gets 429 until AXES_COOLOFF_TIME
# has passed since the last failure. Web login and admin login alike.
AUTHENTICATION_BACKENDS = [
    "portal.lockout.LockoutBackend",  # django-axes' backend, for requests
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = _config.login_failure_limit
AXES_COOLOFF_TIME = timedelta(seconds=_config.login_cooloff)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "portal.clientip.client_ip"
AXES_USERNAME_CALLABLE = "portal.lockout.attempted_username"
AXES_LOCKOUT_CALLABLE = "portal.lockout.lockout_response"
# axes 8.3's admin action "clean up expired attempts" fails on every use (500): no axes
# admin; unlock with `manage.py axes_reset` / `axes_reset_username <name>`.
AXES_ENABLE_ADMIN = False

# Rate-limit counters (portal/throttling.py): files shared by the portal's worker
# processes on this host; one directory per checkout unless PORTAL_RATELIMIT_DIR says.
_ratelimit_dir = _config.ratelimit_dir or os.path.join(
    tempfile.gettempdir(), "cloud-checklist-ratelimit-" + hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:12])
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "ratelimit": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": _ratelimit_dir,
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    },
}

# --- REST API (owned by the API module) ---
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Token first: its 401 carries "WWW-Authenticate: Token". Session auth enforces CSRF.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.apitokens.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["portal.checklists.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_PAGINATION_CLASS": "portal.checklists.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # portal/throttling.py: which requests each rate counts, and how.
    "DEFAULT_THROTTLE_RATES": {
        "sync_token": _config.rate_sync_token,
        "api_token_create": _config.rate_token_create,
        "api_token_failure": _config.rate_token_failures,
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Cloud Checklist API",
    "DESCRIPTION": (
        "Checklists, items and memberships. Authenticate with `Authorization: Token <key>` "
        "(or a browser session plus CSRF). Writes accept `If-Match: \"<version>\"`; a stale "
        "version answers 412. `GET /api/checklists/{id}/` returns `tpos`, the topic position the "
        "state reflects, for subscribing to live updates."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Live sync ---
SYNC_TOKEN_SECRET = _config.sync_token_secret
SYNC_TOKEN_TTL = _config.sync_token_ttl
# The SockJS endpoint browsers connect to (the sync server), as the browser sees it.
SYNC_PUBLIC_URL = _config.sync_public_url

# --- Outbox operations ---
# Where the admin's "Replay" and `manage.py outbox_replay` publish, with which key (none: replay refused).
OUTBOX_REPLAY = AdminConfig(broker_url=_config.replay_broker_url, curve=_config.replay_keys)

# --- Content-Security-Policy (django-csp 4: one dict per policy) ---
# Scripts and styles only from this origin, as files: no inline script or style, no eval.
# The live page connects to the sync server (SYNC_PUBLIC_URL) over WebSocket, XHR and
# EventSource, all governed by connect-src: its http(s) and ws(s) origins are listed.
# Redoc's page adds inline styles and a blob: worker for itself (portal/checklists/api/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF, *connect_origins(SYNC_PUBLIC_URL)],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
