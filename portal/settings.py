"""Django settings for the Cloud Checklist portal.

Environment variables (all optional): DATABASE_URL, PORTAL_SECRET_KEY, PORTAL_DEBUG,
PORTAL_ALLOWED_HOSTS, SYNC_TOKEN_SECRET, SYNC_PUBLIC_URL, SYNC_TOKEN_TTL.
"""
import os
from pathlib import Path

from stack.database import database_url, django_database

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("PORTAL_SECRET_KEY", "dev-insecure-portal-secret-change-me")
DEBUG = os.environ.get("PORTAL_DEBUG", "1") == "1"
ALLOWED_HOSTS = [h for h in os.environ.get("PORTAL_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

INSTALLED_APPS = [
    "portal.adminsite.PortalAdminConfig",  # django.contrib.admin with a hardened site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "portal.outbox",
    "portal.checklists",
    "portal.apitokens",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads a value into a query: see portal/inputguard.py.
    "portal.inputguard.RefuseUnstorableInput",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # serves collected static under gunicorn (compose.yaml)
    "portal.cookies.SessionCookieSanitizer",  # before sessions: see portal/cookies.py
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication (it names the session user); see portal/provenance.py.
    "portal.provenance.ProvenanceMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
}

# --- Live sync ---
SYNC_TOKEN_SECRET = os.environ.get("SYNC_TOKEN_SECRET", "dev-insecure-sync-secret")
SYNC_TOKEN_TTL = int(os.environ.get("SYNC_TOKEN_TTL", "300"))
# The SockJS endpoint browsers connect to (the sync server), as the browser sees it.
SYNC_PUBLIC_URL = os.environ.get("SYNC_PUBLIC_URL", "http://127.0.0.1:8001/sync")
