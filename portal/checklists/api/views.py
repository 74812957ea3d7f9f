"""The REST API: checklists, their items and members, and sync tokens.

Every request runs in one transaction (AtomicView): a response of 400 or more rolls it
back, so a refused write leaves no row and no outbox event behind. Permissions come
from portal/checklists/permissions.py: a non-member gets 404 (the checklist's
existence is not revealed), a viewer who writes 403, and only the owner renames,
deletes or shares.
"""
from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import OuterRef, Subquery
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response

from portal import provenance
from portal.apitokens.models import ApiToken
from portal.throttling import SyncTokenThrottle
from runtime import tokens

from .. import lookups, permissions, services
from ..models import Checklist, Item, Membership, checklist_topic
from ..positions import checklist_tpos
from . import etags
from .serializers import (
    BatchItemSerializer,
    ItemBatchRequestSerializer,
    ItemBatchResponseSerializer,
    ChecklistDetailSerializer,
    ChecklistSerializer,
    ErrorSerializer,
    ItemSerializer,
    ItemUpdateSerializer,
    MembershipSerializer,
    MembershipUpdateSerializer,
    SyncTokenRequestSerializer,
    SyncTokenResponseSerializer,
)

IF_MATCH = OpenApiParameter(
    "If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description='The ETag (version) you last saw, e.g. "3". If the object changed since, 412 and nothing is written.',
)
PRECONDITION_FAILED = OpenApiResponse(ErrorSerializer, description="If-Match did not match the current version.")


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The object changed since the version in If-Match."
    default_code = "precondition_failed"


class AtomicView(GenericAPIView):
    """One transaction per request, rolled back on any error response."""

    def dispatch(self, request, *args, **kwargs):
        with transaction.atomic():
            response = super().dispatch(request, *args, **kwargs)
            if response.status_code >= 400:
                transaction.set_rollback(True)
        return response

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # DRF authenticated the request just now (the provenance middleware could not):
        # name the user, and the API token if one was used, before anything is written.
        # Transaction-local: this request's transaction ends with it, whatever happens, so
        # nothing needs clearing afterwards (portal/provenance.py). Safe methods write no
        # tracked row and skip the statement; token authentication stated it already, in
        # the statement that found the token (portal/apitokens/services.py).
        if request.method not in SAFE_METHODS and not getattr(request.auth, "provenance_stated", False):
            token_id = request.auth.pk if isinstance(request.auth, ApiToken) else None
            provenance.set_request_provenance(request._request, request.user, token_id=token_id, local=True)

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        version = getattr(exc, "current_version", None)
        if version is not None:
            response["ETag"] = etags.etag(version)
        index = getattr(exc, "index", None)
        if index is not None and isinstance(response.data, dict):
            response.data["index"] = index  # which entry of a batch
        return response


def _require(allowed: bool, message: str) -> None:
    if not allowed:
        raise exceptions.PermissionDenied(message)


def _check_if_match(request, version: int) -> None:
    """Compare If-Match with the version of a row the caller has locked."""
    try:
        allowed = etags.if_match_allows(request.headers.get("If-Match"), version)
    except etags.MalformedIfMatch as exc:
        raise exceptions.ParseError(str(exc)) from None
    if not allowed:
        exc = PreconditionFailed(f"The object changed: its current version is {version}.")
        exc.current_version = version
        raise exc


def _with_etag(response: Response, version: int) -> Response:
    response["ETag"] = etags.etag(version)
    return response


def _role_subquery(user):
    return Subquery(Membership.objects.filter(checklist=OuterRef("pk"), user_id=user.pk).values("role")[:1])


def _locked_for_edit(request, pk: int, refusal: str) -> Checklist:
    """The checklist, locked (adds serialize on it, services.add_item), if the user may edit
    it: 404 for a non-member, 403 for a viewer. One statement (lookups.py)."""
    found = lookups.role_locking_checklist(pk, request.user.pk)
    if found is None:
        raise exceptions.NotFound("No such checklist.")
    role, version = found
    _require(role in permissions.WRITE_ROLES, refusal)
    return Checklist(pk=pk, version=version)


def _checklist(request, pk: int, *, lock: bool = False) -> tuple[Checklist, str]:
    """The checklist and the user's role in it; 404 unless the user is a member."""
    qs = Checklist.objects.select_related("owner")
    if lock:
        qs = qs.select_for_update(of=("self",))
    checklist = qs.filter(pk=pk).first()
    role = permissions.role_of(request.user, checklist) if checklist else None
    if role is None:
        raise exceptions.NotFound("No such checklist.")
    checklist.my_role = role
    return checklist, role


class ChecklistListView(AtomicView):
    serializer_class = ChecklistSerializer

    def get_queryset(self):
        user = self.request.user
        return (
            permissions.visible_checklists(user).select_related("owner").annotate(my_role=_role_subquery(user))
        )

    @extend_schema(operation_id="checklists_list", responses=ChecklistSerializer(many=True))
    def get(self, request):
        """Checklists you are a member of."""
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(responses={201: ChecklistSerializer})
    def post(self, request):
        """Create a checklist; you become its owner."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        checklist = services.create_checklist(request.user, serializer.validated_data["title"])
        checklist.my_role = Membership.OWNER
        response = Response(self.get_serializer(checklist).data, status=status.HTTP_201_CREATED,
                            headers={"Location": f"/api/checklists/{checklist.pk}/"})
        return _with_etag(response, checklist.version)


class ChecklistDetailView(AtomicView):
    serializer_class = ChecklistSerializer

    @extend_schema(responses=ChecklistDetailSerializer)
    def get(self, request, pk: int):
        """The checklist with its items, and the topic position (tpos) that state reflects.

        tpos is read first, then the state, in one transaction. Under READ COMMITTED each
        statement sees everything committed before it started; every event numbered up to
        tpos was committed before tpos was read, so the state read afterwards includes it.
        The state may also include newer changes whose events (tpos greater) the client
        then receives and applies idempotently by version. Nothing is missed.
        """
        tpos = checklist_tpos(pk)
        checklist, _ = _checklist(request, pk)
        checklist.tpos = tpos
        data = ChecklistDetailSerializer(checklist, context=self.get_serializer_context()).data
        return _with_etag(Response(data), checklist.version)

    @extend_schema(parameters=[IF_MATCH], responses={200: ChecklistSerializer, 412: PRECONDITION_FAILED})
    def patch(self, request, pk: int):
        """Rename (owner only)."""
        return self._update(request, pk, partial=True)

    @extend_schema(parameters=[IF_MATCH], responses={200: ChecklistSerializer, 412: PRECONDITION_FAILED})
    def put(self, request, pk: int):
        """Rename (owner only)."""
        return self._update(request, pk, partial=False)

    def _update(self, request, pk: int, *, partial: bool) -> Response:
        checklist, role = _checklist(request, pk, lock=True)
        _require(permissions.can_manage(request.user, checklist), "Only the owner can rename a checklist.")
        serializer = self.get_serializer(checklist, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        _check_if_match(request, checklist.version)
        services.rename_checklist(checklist, serializer.validated_data.get("title", checklist.title))
        return _with_etag(Response(self.get_serializer(checklist).data), checklist.version)

    @extend_schema(parameters=[IF_MATCH], responses={204: None, 412: PRECONDITION_FAILED})
    def delete(self, request, pk: int):
        """Delete the checklist with its items and memberships (owner only)."""
        checklist, _ = _checklist(request, pk, lock=True)
        _require(permissions.can_manage(request.user, checklist), "Only the owner can delete a checklist.")
        _check_if_match(request, checklist.version)
        services.delete_checklist(checklist)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ItemListView(AtomicView):
    serializer_class = ItemSerializer

    def get_queryset(self):
        return Item.objects.filter(checklist_id=self.kwargs["pk"])

    @extend_schema(operation_id="checklists_items_list", responses=ItemSerializer(many=True))
    def get(self, request, pk: int):
        """The checklist's items, in position order."""
        _checklist(request, pk)
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(responses={201: ItemSerializer})
    def post(self, request, pk: int):
        """Add an item (editors and owner). Without a position it goes last."""
        checklist = _locked_for_edit(request, pk, "Viewers cannot add items.")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = services.add_item(checklist, **serializer.validated_data, locked=True)
        response = Response(self.get_serializer(item).data, status=status.HTTP_201_CREATED,
                            headers={"Location": f"/api/items/{item.pk}/"})
        return _with_etag(response, item.version)


MAX_BATCH = 500  # entries per batch request (docs/api.md)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"At most {MAX_BATCH} items per batch."
    default_code = "too_large"


def _batch_error(index: int, field: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({"items": {str(index): {field: [message]}}})


class ItemBatchView(AtomicView):
    """Many item writes in one request and one transaction: all of them or none."""

    serializer_class = ItemBatchRequestSerializer

    @extend_schema(
        operation_id="checklists_items_batch",
        request=ItemBatchRequestSerializer,
        responses={200: ItemBatchResponseSerializer,
                   400: OpenApiResponse(description='Invalid entries: {"items": {"<index>": {"<field>": [...]}}}; '
                                                    "nothing written."),
                   412: OpenApiResponse(ErrorSerializer, description="An entry's version is stale (the response "
                                                                     "names its index); nothing written."),
                   413: OpenApiResponse(ErrorSerializer, description=f"More than {MAX_BATCH} entries.")},
    )
    def post(self, request, pk: int):
        """Create and update up to 500 items of this checklist in one transaction (editors
        and owner). Entries apply in order: with `id` an update of that item of this list
        (only the fields given; `version`, if given, must be current), without `id` a new
        item (without a position it goes last). Any invalid entry: 400 naming its index,
        and nothing is written."""
        checklist = _locked_for_edit(request, pk, "Viewers cannot change items.")
        body = request.data
        if not isinstance(body, dict):
            raise exceptions.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(str(k) for k in body if k != "items")
        if unknown:
            raise exceptions.ValidationError({k: ["Unknown field."] for k in unknown})
        entries = body.get("items")
        if not isinstance(entries, list):
            raise exceptions.ValidationError({"items": ["Expected a list of items."]})
        if len(entries) > MAX_BATCH:
            raise PayloadTooLarge(f"At most {MAX_BATCH} items per batch; this one has {len(entries)}.")
        serializer = BatchItemSerializer(data=entries, many=True)
        if not serializer.is_valid():
            errors = serializer.errors  # by index: a dict, or a list under DRF's older list format
            pairs = errors.items() if isinstance(errors, dict) else enumerate(errors)
            raise exceptions.ValidationError({"items": {str(i): e for i, e in pairs if e}})
        entries = serializer.validated_data
        first_index: dict[int, int] = {}
        for index, entry in enumerate(entries):
            if "id" in entry:
                if entry["id"] in first_index:
                    raise _batch_error(index, "id", f"The same item as entry {first_index[entry['id']]}.")
                first_index[entry["id"]] = index
        # Locked in id order: two batches over the same items wait, they do not deadlock.
        current = {item.pk: item for item in
                   Item.objects.select_for_update().filter(checklist_id=pk, pk__in=list(first_index)).order_by("pk")}
        for item_id, index in first_index.items():
            item = current.get(item_id)
            if item is None:
                raise _batch_error(index, "id", "No such item in this checklist.")
            version = entries[index].get("version")
            if version is not None and version != item.version:
                exc = PreconditionFailed(f"Entry {index} (item {item_id}) changed: its current version is "
                                         f"{item.version}.")
                exc.index = index
                raise exc
        items = services.write_items(checklist, entries, current)
        return Response({"items": ItemSerializer(items, many=True).data})


class ItemDetailView(AtomicView):
    serializer_class = ItemUpdateSerializer

    def _item(self, request, pk: int, *, lock: bool = False) -> tuple[Item, str]:
        """The item and the user's role in its checklist, in one statement; 404 unless a member."""
        found = lookups.item_with_role(pk, request.user.pk, lock=lock)
        if found is None or found[1] is None:
            raise exceptions.NotFound("No such item.")
        return found

    @extend_schema(responses=ItemSerializer)
    def get(self, request, pk: int):
        item, _ = self._item(request, pk)
        return _with_etag(Response(ItemSerializer(item).data), item.version)

    @extend_schema(parameters=[IF_MATCH], responses={200: ItemSerializer, 412: PRECONDITION_FAILED})
    def patch(self, request, pk: int):
        """Change text, done, position, or move it (checklist) to another list you can edit."""
        return self._update(request, pk, partial=True)

    @extend_schema(parameters=[IF_MATCH], responses={200: ItemSerializer, 412: PRECONDITION_FAILED})
    def put(self, request, pk: int):
        return self._update(request, pk, partial=False)

    def _update(self, request, pk: int, *, partial: bool) -> Response:
        item, role = self._item(request, pk, lock=True)
        _require(role in permissions.WRITE_ROLES, "Viewers cannot change items.")
        serializer = self.get_serializer(item, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        target = serializer.validated_data.get("checklist_id", item.checklist_id)
        if target != item.checklist_id and not permissions.can_edit(request.user, target):
            raise exceptions.ValidationError({"checklist": ["No such checklist that you can edit."]})
        _check_if_match(request, item.version)
        services.update_item(item, **serializer.validated_data)
        return _with_etag(Response(ItemSerializer(item).data), item.version)

    @extend_schema(parameters=[IF_MATCH], responses={204: None, 412: PRECONDITION_FAILED})
    def delete(self, request, pk: int):
        item, role = self._item(request, pk, lock=True)
        _require(role in permissions.WRITE_ROLES, "Viewers cannot delete items.")
        _check_if_match(request, item.version)
        services.delete_item(item)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberListView(AtomicView):
    serializer_class = MembershipSerializer

    def get_queryset(self):
        return Membership.objects.filter(checklist_id=self.kwargs["pk"]).select_related("user")

    @extend_schema(operation_id="checklists_members_list", responses=MembershipSerializer(many=True))
    def get(self, request, pk: int):
        """Who can see this checklist, and their roles (any member may look)."""
        _checklist(request, pk)
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(responses={201: MembershipSerializer})
    def post(self, request, pk: int):
        """Share with a user by username, as editor or viewer (owner only)."""
        # Locking the checklist serializes membership changes of one list.
        checklist, _ = _checklist(request, pk, lock=True)
        _require(permissions.can_manage(request.user, checklist), "Only the owner can share a checklist.")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = get_user_model().objects.get(username=serializer.validated_data["user"]["username"])
        try:
            membership = services.share(checklist, user, serializer.validated_data["role"])
        except services.AlreadyMember:
            raise exceptions.ValidationError({"username": ["Already a member."]}) from None
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailView(AtomicView):
    serializer_class = MembershipUpdateSerializer

    def _membership(self, request, pk: int, username: str) -> Membership:
        checklist, _ = _checklist(request, pk, lock=True)
        _require(permissions.can_manage(request.user, checklist), "Only the owner can manage members.")
        membership = (
            Membership.objects.select_for_update(of=("self",)).select_related("user")
            .filter(checklist=checklist, user__username=username).first()
        )
        if membership is None:
            raise exceptions.NotFound("No such member.")
        if membership.user_id == checklist.owner_id:
            raise exceptions.ValidationError({"username": ["The owner's membership cannot change."]})
        return membership

    @extend_schema(responses=MembershipSerializer)
    def patch(self, request, pk: int, username: str):
        """Change a member's role (owner only)."""
        membership = self._membership(request, pk, username)
        serializer = self.get_serializer(membership, data=request.data, partial=False)
        serializer.is_valid(raise_exception=True)
        services.change_role(membership, serializer.validated_data["role"])
        return Response(MembershipSerializer(membership).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int, username: str):
        """Remove a member (owner only); their live subscriptions end at once."""
        services.remove_member(self._membership(request, pk, username))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SyncTokenView(AtomicView):
    serializer_class = SyncTokenRequestSerializer
    throttle_classes = [SyncTokenThrottle]

    @extend_schema(
        request=SyncTokenRequestSerializer,
        responses={200: SyncTokenResponseSerializer, 403: OpenApiResponse(description="A topic you may not view."),
                   429: OpenApiResponse(ErrorSerializer, description="Too many tokens requested; see Retry-After.")},
    )
    def post(self, request):
        """A short-lived token for the sync server, for topics you may view."""
        body = request.data
        if not isinstance(body, dict):
            raise exceptions.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(str(k) for k in body if k != "topics")
        if unknown:
            raise exceptions.ValidationError({k: ["Unknown field."] for k in unknown})
        topics = body.get("topics")
        if topics is None:
            topics = [checklist_topic(pk) for pk in permissions.visible_checklists(request.user).values_list("pk", flat=True)]
        elif not isinstance(topics, list) or not all(isinstance(t, str) for t in topics) or len(topics) > 500:
            raise exceptions.ValidationError({"topics": ["Expected a list of at most 500 topic strings."]})
        for topic in topics:
            if not permissions.can_watch(request.user, topic):
                raise exceptions.PermissionDenied(f"You may not watch topic {topic!r}.")
        now = int(time.time())
        ttl = settings.SYNC_TOKEN_TTL
        token = tokens.mint(settings.SYNC_TOKEN_SECRET, user_id=request.user.pk, username=request.user.get_username(),
                            topics=topics, ttl=ttl, now=now)
        return Response({"token": token, "expires_at": now + ttl, "url": settings.SYNC_PUBLIC_URL,
                         "topics": sorted(set(topics))})
