"""The admin site: Django's, with every registered ModelAdmin hardened against input
that made it answer 500.

- An action posted with a selected id that is not an id ("", "1e400", "abc"): Django
  filters `pk__in=selected` and the integer conversion raises. Now a 400 naming it.
- A date-hierarchy year beyond what datetime holds (`?created_at__year=9999999999999`):
  Django catches ValueError but not OverflowError. Now the changelist's usual answer to
  a bad filter (a redirect with `?e=1`).

Registration goes through PortalAdminSite.register, so models registered by other apps
(auth's User and Group, django-axes) get the same treatment as ours. Installed as the
default site by PortalAdminConfig (settings.INSTALLED_APPS), Django's documented way to
replace `admin.site`.
"""
from __future__ import annotations

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest


class HardenedChangeList(ChangeList):
    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except OverflowError as exc:  # a date-hierarchy year too large for datetime
            raise IncorrectLookupParameters(exc) from exc


class HardenedModelAdmin:
    """Mixed in front of any ModelAdmin class by PortalAdminSite.register."""

    def get_changelist(self, request, **kwargs):
        base = super().get_changelist(request, **kwargs)
        if issubclass(base, HardenedChangeList):
            return base
        return type(f"Hardened{base.__name__}", (HardenedChangeList, base), {})

    def response_action(self, request, queryset):
        pk = self.model._meta.pk
        for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            try:
                pk.to_python(value)
            except (ValidationError, ValueError, TypeError):
                return HttpResponseBadRequest(
                    f"Invalid selection: {value[:40]!r} is not an id of a {self.model._meta.verbose_name}.\n",
                    content_type="text/plain; charset=utf-8")
        return super().response_action(request, queryset)


class PortalAdminSite(admin.AdminSite):
    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, HardenedModelAdmin):
            admin_class = type(admin_class.__name__, (HardenedModelAdmin, admin_class),
                               {"__module__": admin_class.__module__, "__doc__": admin_class.__doc__})
        return super().register(model_or_iterable, admin_class, **options)


class PortalAdminConfig(AdminConfig):
    default_site = "portal.adminsite.PortalAdminSite"
