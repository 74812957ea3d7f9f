"""Admin for checklists, items and memberships. Writes made here are captured by the
triggers like any other; the provenance middleware marks them source "admin"."""
from django.contrib import admin

from .models import Checklist, Item, Membership


class ItemInline(admin.TabularInline):
    model = Item
    extra = 0
    fields = ["text", "done", "position", "version"]
    readonly_fields = ["version"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "version"]
    readonly_fields = ["version"]
    autocomplete_fields = ["user"]


@admin.register(Checklist)
class ChecklistAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "owner", "created_at", "version", "item_count"]
    list_display_links = ["id", "title"]
    search_fields = ["title", "owner__username"]
    list_filter = ["created_at", "owner"]
    readonly_fields = ["created_at", "version"]
    autocomplete_fields = ["owner"]
    inlines = [MembershipInline, ItemInline]

    @admin.display(description="items")
    def item_count(self, obj: Checklist) -> int:
        return obj.items.count()

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Every owner is a member with the owner role, as when created through the API or UI.
        Membership.objects.update_or_create(checklist=obj, user=obj.owner, defaults={"role": Membership.OWNER})


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["id", "text", "checklist", "done", "position", "version"]
    list_display_links = ["id", "text"]
    list_editable = ["done"]
    search_fields = ["text", "checklist__title"]
    list_filter = ["done", "checklist"]
    readonly_fields = ["version"]
    autocomplete_fields = ["checklist"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["id", "checklist", "user", "role", "version"]
    search_fields = ["checklist__title", "user__username"]
    list_filter = ["role"]
    readonly_fields = ["version"]
    autocomplete_fields = ["checklist", "user"]
