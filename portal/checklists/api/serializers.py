"""Request and response shapes of the REST API.

Writable fields are strict about JSON types, and a body naming a field the serializer
does not know is rejected (400 naming it) rather than silently ignored. Read-only
fields (id, version, ...) may be sent back as received; they are ignored.
"""
import copy
from collections.abc import Mapping

from django.contrib.auth import get_user_model
from rest_framework import serializers

from ..models import TEXT_MAX, TITLE_MAX, Checklist, Item, Membership
from .fields import StrictBooleanField, StrictCharField, StrictIntegerField


# Fields that hold other fields or querysets: copied as DRF copies them (deepcopy).
_NESTED_FIELDS = (serializers.BaseSerializer, serializers.ListField, serializers.DictField,
                  serializers.RelatedField, serializers.ManyRelatedField)


def fresh_field(prototype: serializers.Field) -> serializers.Field:
    """A copy of an unbound field for one serializer instance to bind.

    DRF's own copy (Field.__deepcopy__) runs the field's __init__ again on deep copies of
    its arguments: some 30 µs a field, about 0.4 ms of a REST create's CPU for its two
    serializers. A flat field's state is its attributes; binding and validating only
    assign attributes, never mutate shared ones, so a shallow copy with containers of
    its own (style, error messages, validators) behaves the same
    (tests/portal/test_api_serializers.py compares it with DRF's copy for every field of
    the API's serializers). Nested fields keep DRF's copy."""
    if isinstance(prototype, _NESTED_FIELDS):
        return copy.deepcopy(prototype)
    field = copy.copy(prototype)
    field.style = dict(prototype.style)
    field.error_messages = dict(prototype.error_messages)
    if "_validators" in prototype.__dict__:
        field._validators = list(prototype._validators)
    return field


class CachedModelFields:
    """ModelSerializer.get_fields() introspects the model on every serializer instance (two
    per write: the input and the response), about half a millisecond of a create's CPU.
    Its answer depends only on the class (Meta and the declared fields), so it is built
    once per class and each instance gets fresh copies (fields are bound to their
    serializer, as DRF's declared fields are copied): `fresh_field`."""

    def get_fields(self):
        cls = type(self)
        prototype = cls.__dict__.get("_fields_prototype")
        if prototype is None:
            prototype = super().get_fields()
            cls._fields_prototype = prototype
        return {name: fresh_field(field) for name, field in prototype.items()}


class RejectUnknownFields:
    """Unknown fields are errors, reported together with any other field's error."""

    def to_internal_value(self, data):
        unknown = sorted(str(k) for k in set(data) - set(self.fields)) if isinstance(data, Mapping) else []
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not unknown or not isinstance(exc.detail, dict):
                raise
            errors = dict(exc.detail)
        else:
            errors = {}
        errors.update({k: ["Unknown field."] for k in unknown})
        if errors:
            raise serializers.ValidationError(errors)
        return value


class ItemSerializer(RejectUnknownFields, CachedModelFields, serializers.ModelSerializer):
    checklist = serializers.IntegerField(source="checklist_id", read_only=True)
    text = StrictCharField(max_length=TEXT_MAX)
    done = StrictBooleanField(required=False)
    position = StrictIntegerField(required=False)

    class Meta:
        model = Item
        fields = ["id", "checklist", "text", "done", "position", "version"]
        read_only_fields = ["id", "version"]


class ItemUpdateSerializer(ItemSerializer):
    """An update may also move the item to another checklist the user can edit."""

    checklist = StrictIntegerField(source="checklist_id", required=False, min_value=1, max_value=2**63 - 1)


class BatchItemSerializer(ItemSerializer):
    """One entry of a batch: with `id`, an update of that item (the fields given; `version`,
    if given, must be the item's current version, as If-Match); without, a new item."""

    id = StrictIntegerField(required=False, min_value=1, max_value=2**63 - 1,
                            help_text="An item of this checklist to update; omit to create one.")
    text = StrictCharField(max_length=TEXT_MAX, required=False, help_text="Required for a new item.")
    version = StrictIntegerField(required=False, min_value=1, max_value=2**63 - 1,
                                 help_text="Update only if the item is still at this version (else 412).")

    class Meta(ItemSerializer.Meta):
        read_only_fields = []

    def validate(self, attrs):
        if "id" not in attrs and "text" not in attrs:
            raise serializers.ValidationError({"text": ["This field is required for a new item."]})
        if "id" not in attrs and "version" in attrs:
            raise serializers.ValidationError({"version": ["Only an update (with id) has a version."]})
        return attrs


class ItemBatchRequestSerializer(serializers.Serializer):
    items = BatchItemSerializer(many=True, help_text="At most 500 entries, applied in order.")


class ItemBatchResponseSerializer(serializers.Serializer):
    items = ItemSerializer(many=True, help_text="Each item as written, in the order of the request.")


class ChecklistSerializer(RejectUnknownFields, CachedModelFields, serializers.ModelSerializer):
    title = StrictCharField(max_length=TITLE_MAX)
    owner = serializers.CharField(source="owner.username", read_only=True)
    role = serializers.SerializerMethodField()

    class Meta:
        model = Checklist
        fields = ["id", "title", "owner", "created_at", "version", "role"]
        read_only_fields = ["id", "created_at", "version"]

    def get_role(self, obj) -> str | None:
        """The requesting user's role in this checklist."""
        return getattr(obj, "my_role", None)


class ChecklistDetailSerializer(ChecklistSerializer):
    items = ItemSerializer(many=True, read_only=True)
    tpos = serializers.IntegerField(
        read_only=True,
        help_text="Latest topic position of checklist:<id> this state reflects; subscribe since it.",
    )

    class Meta(ChecklistSerializer.Meta):
        fields = ChecklistSerializer.Meta.fields + ["items", "tpos"]


class MembershipSerializer(RejectUnknownFields, CachedModelFields, serializers.ModelSerializer):
    username = StrictCharField(source="user.username", max_length=150)
    user_id = serializers.IntegerField(read_only=True)
    role = serializers.ChoiceField(choices=[Membership.EDITOR, Membership.VIEWER], default=Membership.EDITOR)

    class Meta:
        model = Membership
        fields = ["id", "username", "user_id", "role", "version"]
        read_only_fields = ["id", "version"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["role"] = instance.role  # the owner's role is shown though it cannot be granted
        return data

    def validate_username(self, value: str):
        user = get_user_model().objects.filter(username=value).first()
        if user is None:
            raise serializers.ValidationError("No such user.")
        return value


class MembershipUpdateSerializer(MembershipSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    role = serializers.ChoiceField(choices=[Membership.EDITOR, Membership.VIEWER])


class SyncTokenRequestSerializer(serializers.Serializer):
    topics = serializers.ListField(
        child=serializers.CharField(), required=False, max_length=500,
        help_text="Topics to watch, e.g. checklist:1. Omitted: every checklist you can view.",
    )


class SyncTokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.IntegerField(help_text="Unix seconds.")
    url = serializers.CharField(help_text="The sync server's SockJS URL.")
    topics = serializers.ListField(child=serializers.CharField())


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
