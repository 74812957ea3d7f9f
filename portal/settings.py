"""Django settings for the Cloud Checklist portal.

Environment variables (all optional): DATABASE_URL, PORTAL_SECRET_KEY, PORTAL_DEBUG,
PORTAL_ALLOWED_HOSTS, SYNC_TOKEN_SECRET, SYNC_PUBLIC_URL, SYNC_TOKEN_TTL, and the web
defences' PORTAL_TRUSTED_PROXIES, PORTAL_LOGIN_FAILURE_LIMIT, PORTAL_LOGIN_COOLOFF,
PORTAL_RATE_*, PORTAL_RATELIMIT_DIR (README, docs/security.md).
"""
import hashlib
import os
import tempfile
from datetime import timedelta
from functools import partial
from pathlib import Path

from csp.constants import NONE, SELF

from outbox_relay.envvalues import env_value, parse_int
from portal.cspsources import connect_origins
from portal.rates import parse_rate
from stack.database import database_url, django_database
from syncserver.peers import parse_trusted

BASE_DIR = Path(__file__).resolve().parent.parent

# The defaults are for development only: with DEBUG off, portal/deploychecks.py refuses them.
SECRET_KEY = os.environ.get("PORTAL_SECRET_KEY", "dev-insecure-portal-secret-change-me")
DEBUG = os.environ.get("PORTAL_DEBUG", "1") == "1"


def _flag(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError(f"{raw!r} is not 0 or 1")
    return raw == "1"


ALLOWED_HOSTS = [h for h in os.environ.get("PORTAL_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

# --- HTTPS (docs/security.md, "Web and transport defences") ---
# PORTAL_HTTPS=1: browsers reach the portal over TLS, terminated here or by a proxy in
# front that sets X-Forwarded-Proto (and overwrites a client's). Cookies are then sent
# over TLS only, browsers are told to use TLS for a year (HSTS) and plain HTTP is
# redirected. On by default when DEBUG is off; `make run` (DEBUG on, plain HTTP) leaves
# it off; compose.yaml asks for it explicitly.
HTTPS = env_value(os.environ, "PORTAL_HTTPS", not DEBUG, _flag)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_HSTS_SECONDS = env_value(os.environ, "PORTAL_HSTS_SECONDS", 31_536_000 if HTTPS else 0,
                                partial(parse_int, low=0, high=2 * 31_536_000))
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

DATABASES = {"default": django_database(database_url())}
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
    "root": {"handlers": ["console"], "level": os.environ.get("PORTAL_LOG_LEVEL", "INFO")},
}

# --- Brute force (docs/security.md, "Web and transport defences") ---
def _rate(raw: str) -> str:
    parse_rate(raw)  # refuse a malformed rate at start, not at the first request
    return raw


# Addresses (or CIDRs) of reverse proxies whose X-Forwarded-For is believed
# (portal/clientip.py); nobody else's is.
PORTAL_TRUSTED_PROXIES = env_value(os.environ, "PORTAL_TRUSTED_PROXIES", (), parse_trusted)

# django-axes: after AXES_FAILURE_LIMIT failed logins for one username, or from one client
# address, every login for it (right password included) gets 429 until AXES_COOLOFF_TIME
# has passed since the last failure. Web login and admin login alike.
AUTHENTICATION_BACKENDS = [
    "portal.lockout.LockoutBackend",  # django-axes' backend, for requests
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_value(os.environ, "PORTAL_LOGIN_FAILURE_LIMIT", 5, partial(parse_int, low=1, high=1000))
AXES_COOLOFF_TIME = timedelta(
    seconds=env_value(os.environ, "PORTAL_LOGIN_COOLOFF", 900, partial(parse_int, low=1, high=7 * 86400)))
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
_ratelimit_dir = os.environ.get("PORTAL_RATELIMIT_DIR", "").strip() or os.path.join(
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
        "sync_token": env_value(os.environ, "PORTAL_RATE_SYNC_TOKEN", "60/min", _rate),
        "api_token_create": env_value(os.environ, "PORTAL_RATE_TOKEN_CREATE", "20/h", _rate),
        "api_token_failure": env_value(os.environ, "PORTAL_RATE_TOKEN_FAILURES", "20/10m", _rate),
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
SYNC_TOKEN_SECRET = os.environ.get("SYNC_TOKEN_SECRET", "dev-insecure-sync-secret")
SYNC_TOKEN_TTL = int(os.environ.get("SYNC_TOKEN_TTL", "300"))
# The SockJS endpoint browsers connect to (the sync server), as the browser sees it.
SYNC_PUBLIC_URL = os.environ.get("SYNC_PUBLIC_URL", "http://127.0.0.1:8001/sync")

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
