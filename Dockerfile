# One image for every service of compose.yaml (portal, migrate, broker, relay, syncserver);
# each service picks its command. Built from the repository root: docker compose build.

# sockjs-client for the browser, from the npm lockfile (served as /static/vendor/).
FROM node:20-slim AS browser-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --omit=dev

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first, so code edits do not reinstall them (the layer only depends on
# pyproject.toml; the stub packages let setuptools resolve the package list).
COPY pyproject.toml ./
RUN mkdir runtime portal outbox_relay syncserver stack \
    && touch runtime/__init__.py portal/__init__.py outbox_relay/__init__.py syncserver/__init__.py stack/__init__.py \
    && pip install . \
    && pip uninstall -y cloud-checklist-sync \
    && rm -rf runtime portal outbox_relay syncserver stack build *.egg-info

COPY --from=browser-deps /app/node_modules ./node_modules
COPY . .
# Editable: the code, its templates, static files and migrations/*.sql stay in /app, the
# one copy every service imports (a plain install would leave the non-Python files out).
# The settings read DATABASE_URL at import; collectstatic never connects, so any URL does.
RUN pip install --no-deps -e . \
    && DATABASE_URL=postgresql://unused@localhost/unused python manage.py collectstatic --noinput \
    && useradd --system --home-dir /app checklist

USER checklist
EXPOSE 8000 8001
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000"]
