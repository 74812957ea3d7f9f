"""The outbox in the Django admin: read-only browsing, the relay's status, and replay.

Payloads are for those with outbox.view_outbox_payload (superusers have every
permission): the rows hold every checklist's item texts and who wrote them. Staff with
only view_outboxevent see positions, topics, operations and status; payload columns,
filters, search fields and detail fields are left out for them (search and filters too,
since matching on a value discloses it).
"""
from __future__ import annotations

import logging

import psycopg
from django.conf import settings
from django.contrib import admin, messages
from django.db import connection

from outbox_relay import operations
from outbox_relay.config import publisher_keys
from portal.outbox.models import OutboxEvent
from runtime.database import with_dbname
from runtime.settings import SettingError

log = logging.getLogger(__name__)


PAYLOAD_PERMISSION = "view_outbox_payload"
PAYLOAD_FIELDS = frozenset({"data", "changed", "actor", "request_id"})


def _dsn() -> str:
    # Django's database (its name differs under the test runner) on the configured server.
    return with_dbname(settings.DATABASE_URL, connection.settings_dict["NAME"])


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = ("id", "pos", "topic", "tpos", "op", "entity", "entity_id", "version", "source",
                    "actor", "created_at", "sequenced_at", "poisoned")
    list_filter = ("topic", "source", "actor", "op", "entity", ("error", admin.EmptyFieldListFilter),
                   ("pos", admin.EmptyFieldListFilter))
    search_fields = ("topic", "entity", "entity_id", "actor", "request_id", "=txid")
    date_hierarchy = "created_at"
    ordering = ("-id",)
    list_per_page = 100
    show_full_result_count = False  # a count(*) over a large outbox on every page is wasteful
    actions = ["replay_selected"]

    @admin.display(boolean=True, description="poison")
    def poisoned(self, obj: OutboxEvent) -> bool:
        return obj.error is not None

    # Read-only: the outbox is written by triggers and the relay, never by hand.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_payload_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{PAYLOAD_PERMISSION}")

    def _without_payload(self, request, names):
        return names if self.has_payload_permission(request) else [f for f in names if f not in PAYLOAD_FIELDS]

    def get_list_display(self, request):
        return self._without_payload(request, super().get_list_display(request))

    def get_list_filter(self, request):
        return self._without_payload(request, super().get_list_filter(request))

    def get_search_fields(self, request):
        return self._without_payload(request, super().get_search_fields(request))

    def get_fields(self, request, obj=None):
        return self._without_payload(request, super().get_fields(request, obj))

    def has_replay_permission(self, request) -> bool:
        return request.user.is_superuser

    @admin.action(description="Replay selected events to the broker", permissions=["replay"])
    def replay_selected(self, request, queryset) -> None:
        ids = tuple(queryset.filter(pos__isnull=False).values_list("id", flat=True))
        skipped = queryset.count() - len(ids)
        broker = settings.OUTBOX_REPLAY.broker_url
        try:
            # The relay's publisher key: without it (the portal is not given one by
            # default in a deployment) replay is refused here, not by the broker.
            result = operations.replay(_dsn(), broker, operations.Selection(ids=ids),
                                       curve=publisher_keys(settings.OUTBOX_REPLAY.curve))
        except (psycopg.Error, OSError, SettingError, operations.BrokerRefused) as exc:
            self.message_user(request, f"Replay failed: {exc}", messages.ERROR)
            return
        msg = f"Replayed {result.count} events (pos {result.first_pos}..{result.last_pos}) to {broker}."
        if skipped:
            msg += f" {skipped} not yet sequenced, left to the relay."
        self.message_user(request, msg, messages.SUCCESS)

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        try:
            extra_context["relay_status"] = operations.status(_dsn())
        except psycopg.Error as exc:
            log.warning("relay status unavailable: %s", exc)
            extra_context["relay_status_error"] = str(exc)
        return super().changelist_view(request, extra_context=extra_context)
