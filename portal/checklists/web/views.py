"""Server-rendered pages of the portal.

Every form works without JavaScript: POST, then redirect with a message. The page's
script submits the same forms with `Accept: application/json` and gets JSON back (the
changed rows with their new versions), so the window that made a change shows it at
once and the live events, which carry the same versions, are then ignored as not newer.

Permissions come from ..permissions only: a non-member gets 404 (the checklist's
existence is not revealed), a member without the needed role gets 403.
"""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.throttling import TokenCreationThrottle, retry_after

from .. import permissions, services
from ..models import Checklist, Item, Membership
from ..positions import checklist_tpos
from . import forms

log = logging.getLogger(__name__)

VIEW, EDIT, MANAGE = "view", "edit", "manage"


# --- helpers -------------------------------------------------------------------------


def _checklist_for(request: HttpRequest, pk: int, need: str, *, lock: bool = False) -> tuple[Checklist, str]:
    """The checklist and the user's role, or 404 (not a member) / 403 (role too low)."""
    role = permissions.role_of(request.user, pk)
    if role is None:
        raise Http404("No such checklist")
    if need == EDIT and role not in permissions.WRITE_ROLES:
        raise PermissionDenied("Viewers cannot change this checklist")
    if need == MANAGE and role != Membership.OWNER:
        raise PermissionDenied("Only the owner can do this")
    qs = Checklist.objects.select_for_update() if lock else Checklist.objects
    # Deleted between the role check and here: same answer as for a non-member.
    checklist = qs.filter(pk=pk).first()
    if checklist is None:
        raise Http404("No such checklist")
    return checklist, role


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _item_data(item: Item) -> dict[str, Any]:
    """An item as the capture trigger writes it into events, so the page applies both alike."""
    return {
        "id": item.pk,
        "checklist_id": item.checklist_id,
        "text": item.text,
        "done": item.done,
        "position": item.position,
        "version": item.version,
    }


def _ok(request: HttpRequest, to: str, message: str | None = None, **payload: Any) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"ok": True, **payload})
    if message:
        messages.success(request, message)
    return redirect(to)


def _fail(request: HttpRequest, to: str, message: str) -> HttpResponse:
    """A rejected input: nothing was written; say why."""
    if _wants_json(request):
        return JsonResponse({"ok": False, "error": message}, status=400)
    messages.error(request, message)
    return redirect(to)


def _form_error(form) -> str:
    """The first error of a form, phrased for a person."""
    for field, errors in form.errors.items():
        label = "" if field == "__all__" else f"{field.capitalize()}: "
        return f"{label}{errors[0]}"
    return "Invalid input."


def _detail_url(checklist_id: int) -> str:
    return reverse("web:checklist", args=[checklist_id])


def _members(checklist_id: int) -> list[Membership]:
    return list(
        Membership.objects.filter(checklist_id=checklist_id).select_related("user").order_by("user__username")
    )


# --- checklists ----------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def checklist_list(request: HttpRequest) -> HttpResponse:
    form = forms.ChecklistTitleForm()
    if request.method == "POST":
        form = forms.ChecklistTitleForm(request.POST)
        if not form.is_valid():
            return _fail(request, "/", _form_error(form))
        with transaction.atomic():
            checklist = services.create_checklist(request.user, form.cleaned_data["title"])
        messages.success(request, f"Created “{checklist.title}”.")
        return redirect(_detail_url(checklist.pk))
    rows = (
        permissions.visible_checklists(request.user)
        .select_related("owner")
        .annotate(
            n_items=Count("items", distinct=True),
            n_done=Count("items", filter=Q(items__done=True), distinct=True),
        )
        .order_by("title", "id")
    )
    roles = dict(Membership.objects.filter(user_id=request.user.pk).values_list("checklist_id", "role"))
    checklists = [{"c": c, "role": roles.get(c.pk)} for c in rows]
    return render(request, "checklists/list.html", {"checklists": checklists, "form": form})


@login_required
@require_GET
def checklist_detail(request: HttpRequest, pk: int) -> HttpResponse:
    with transaction.atomic():
        checklist, role = _checklist_for(request, pk, VIEW)
        # tpos first, then the rows: every event up to tpos committed before this read, so
        # the rows include it; an event committed in between is redelivered and ignored by
        # version. Reading in the other order could lose one.
        tpos = checklist_tpos(checklist.pk)
        items = list(checklist.items.order_by("position", "id"))
        members = _members(checklist.pk)
    context = {
        "checklist": checklist,
        "role": role,
        "can_edit": role in permissions.WRITE_ROLES,
        "can_manage": role == Membership.OWNER,
        "items": items,
        "members": members,
        "tpos": tpos,
        "sync_url": settings.SYNC_PUBLIC_URL,
        "share_form": forms.ShareForm(),
        "role_choices": forms.SHARE_ROLES,
        "item_template": Item(id=0, checklist_id=checklist.pk, text="", done=False, position=0, version=0),
        "text_max": Item._meta.get_field("text").max_length,
        "title_max": Checklist._meta.get_field("title").max_length,
    }
    return render(request, "checklists/detail.html", context)


@login_required
@require_GET
def members_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The members panel alone: the live page reloads it when memberships change."""
    checklist, role = _checklist_for(request, pk, VIEW)
    context = {
        "checklist": checklist,
        "role": role,
        "can_manage": role == Membership.OWNER,
        "members": _members(checklist.pk),
        "share_form": forms.ShareForm(),
        "role_choices": forms.SHARE_ROLES,
    }
    return render(request, "checklists/_members.html", context)


@login_required
@require_POST
def checklist_rename(request: HttpRequest, pk: int) -> HttpResponse:
    here = _detail_url(pk)
    form = forms.ChecklistTitleForm(request.POST)
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, MANAGE, lock=True)
        if not form.is_valid():
            return _fail(request, here, _form_error(form))
        services.rename_checklist(checklist, form.cleaned_data["title"])
    return _ok(request, here, "Renamed.", title=checklist.title)


@login_required
@require_POST
def checklist_delete(request: HttpRequest, pk: int) -> HttpResponse:
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, MANAGE, lock=True)
        services.delete_checklist(checklist)
    return _ok(request, "/", f"Deleted “{checklist.title}”.", deleted=pk)


# --- items ---------------------------------------------------------------------------


def _item_for(checklist: Checklist, item_id: int) -> Item:
    return get_object_or_404(Item.objects.select_for_update(), pk=item_id, checklist_id=checklist.pk)


@login_required
@require_POST
def item_add(request: HttpRequest, pk: int) -> HttpResponse:
    here = _detail_url(pk)
    form = forms.ItemTextForm(request.POST)
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, EDIT)
        if not form.is_valid():
            return _fail(request, here, _form_error(form))
        item = services.add_item(checklist, form.cleaned_data["text"])
    return _ok(request, here, None, item=_item_data(item))


@login_required
@require_POST
def item_edit(request: HttpRequest, pk: int, item_id: int) -> HttpResponse:
    here = _detail_url(pk)
    form = forms.ItemTextForm(request.POST)
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, EDIT)
        item = _item_for(checklist, item_id)
        if not form.is_valid():
            return _fail(request, here, _form_error(form))
        services.update_item(item, text=form.cleaned_data["text"])
    return _ok(request, here, None, item=_item_data(item))


@login_required
@require_POST
def item_toggle(request: HttpRequest, pk: int, item_id: int) -> HttpResponse:
    here = _detail_url(pk)
    form = forms.ToggleForm(request.POST)
    form.is_valid()  # a BooleanField(required=False) accepts anything
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, EDIT)
        item = _item_for(checklist, item_id)
        # An explicit value, not a flip: a resubmitted form cannot undo itself.
        services.update_item(item, done=form.cleaned_data.get("done", False))
    return _ok(request, here, None, item=_item_data(item))


@login_required
@require_POST
def item_move(request: HttpRequest, pk: int, item_id: int) -> HttpResponse:
    here = _detail_url(pk)
    form = forms.MoveForm(request.POST)
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, EDIT)
        _item_for(checklist, item_id)
        if not form.is_valid():
            return _fail(request, here, _form_error(form))
        moved = services.move_item(checklist, item_id, direction=form.cleaned_data.get("direction") or None,
                                   index=form.cleaned_data.get("index"))
    return _ok(request, here, None, items=[_item_data(i) for i in moved])


@login_required
@require_POST
def item_delete(request: HttpRequest, pk: int, item_id: int) -> HttpResponse:
    here = _detail_url(pk)
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, EDIT)
        item = _item_for(checklist, item_id)
        data = _item_data(item)
        data["version"] = services.delete_item(item)
    return _ok(request, here, None, deleted=data)


# --- members -------------------------------------------------------------------------


@login_required
@require_POST
def member_add(request: HttpRequest, pk: int) -> HttpResponse:
    here = _detail_url(pk)
    form = forms.ShareForm(request.POST)
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, MANAGE)
        if not form.is_valid():
            return _fail(request, here, _form_error(form))
        username = form.cleaned_data["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            return _fail(request, here, f"There is no user named “{username}”.")
        try:
            services.share(checklist, user, form.cleaned_data["role"])
        except services.AlreadyMember:
            return _fail(request, here, f"{username} is already a member; change their role below.")
    return _ok(request, here, f"Shared with {username} as {form.cleaned_data['role']}.")


def _member_for(checklist: Checklist, membership_id: int) -> Membership:
    return get_object_or_404(
        Membership.objects.select_for_update().select_related("user"), pk=membership_id, checklist_id=checklist.pk
    )


@login_required
@require_POST
def member_role(request: HttpRequest, pk: int, membership_id: int) -> HttpResponse:
    here = _detail_url(pk)
    form = forms.RoleForm(request.POST)
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, MANAGE)
        membership = _member_for(checklist, membership_id)
        if membership.role == Membership.OWNER:
            return _fail(request, here, "The owner's role cannot be changed.")
        if not form.is_valid():
            return _fail(request, here, _form_error(form))
        services.change_role(membership, form.cleaned_data["role"])
    return _ok(request, here, f"{membership.user.username} is now {membership.role}.")


@login_required
@require_POST
def member_remove(request: HttpRequest, pk: int, membership_id: int) -> HttpResponse:
    here = _detail_url(pk)
    with transaction.atomic():
        checklist, _ = _checklist_for(request, pk, MANAGE)
        membership = _member_for(checklist, membership_id)
        if membership.role == Membership.OWNER:
            return _fail(request, here, "The owner cannot be removed; delete the checklist instead.")
        services.remove_member(membership)
    return _ok(request, here, f"Removed {membership.user.username}.")


# --- API tokens ----------------------------------------------------------------------

_PLAINTEXT_KEY = "web.new_api_token"


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    from portal.apitokens import services as apitokens

    here = request.path
    form = forms.TokenForm()
    if request.method == "POST":
        form = forms.TokenForm(request.POST)
        if not form.is_valid():
            return _fail(request, here, _form_error(form))
        throttle = TokenCreationThrottle()
        if not throttle.allow_request(request, None):
            return _too_many(request, throttle.wait(), "You created too many API tokens recently.")
        with transaction.atomic():
            token, plaintext = apitokens.create_token(request.user, form.cleaned_data["name"])
        # Shown once, on the page the redirect lands on, then forgotten.
        request.session[_PLAINTEXT_KEY] = {"name": token.name, "plaintext": plaintext}
        return redirect(here)
    new_token = request.session.pop(_PLAINTEXT_KEY, None)
    context = {"tokens": list(apitokens.active_tokens(request.user)), "form": form, "new_token": new_token}
    response = render(request, "checklists/tokens.html", context)
    if new_token is not None:
        # A secret on the page: no cache (browser, proxy, back button) may keep a copy.
        add_never_cache_headers(response)
        response["Cache-Control"] = "no-store, private, max-age=0"
    return response


def _too_many(request: HttpRequest, wait: float | None, message: str) -> HttpResponse:
    """429 with Retry-After: a page, or JSON for the page's script."""
    seconds = retry_after(wait)
    text = f"{message} Try again in {seconds} seconds."
    if _wants_json(request):
        response = JsonResponse({"ok": False, "error": text}, status=429)
    else:
        response = render(request, "too_many.html", {"message": text}, status=429)
    response["Retry-After"] = seconds
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    from portal.apitokens import services as apitokens

    here = reverse("web:tokens")
    with transaction.atomic():
        revoked = apitokens.revoke_token(request.user, token_id)
    if not revoked:
        return _fail(request, here, "No such active token.")
    return _ok(request, here, "Token revoked; programs using it can no longer sign in.")
