"""Validation of the web UI's forms. Limits come from the models, so the UI, the API
and the database agree on them."""
from __future__ import annotations

from django import forms

from ..models import TEXT_MAX, TITLE_MAX, Membership

SHARE_ROLES = [(Membership.EDITOR, "Editor"), (Membership.VIEWER, "Viewer")]


class ChecklistTitleForm(forms.Form):
    title = forms.CharField(max_length=TITLE_MAX, strip=True)


class ItemTextForm(forms.Form):
    text = forms.CharField(max_length=TEXT_MAX, strip=True)


class ToggleForm(forms.Form):
    # An unchecked checkbox sends nothing, so "absent" means "not done".
    done = forms.BooleanField(required=False)


class MoveForm(forms.Form):
    """Either one step (up/down) or a target index in the list (drag and drop)."""

    direction = forms.ChoiceField(choices=[("up", "up"), ("down", "down")], required=False)
    index = forms.IntegerField(min_value=0, required=False)

    def clean(self):
        data = super().clean()
        if not data.get("direction") and data.get("index") is None:
            raise forms.ValidationError("Say where to move the item (up, down or an index).")
        return data


class ShareForm(forms.Form):
    username = forms.CharField(max_length=150, strip=True)
    role = forms.ChoiceField(choices=SHARE_ROLES)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=SHARE_ROLES)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True)
