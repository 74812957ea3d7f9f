from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "web"

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.checklist_list, name="checklists"),
    path("checklists/<int:pk>/", views.checklist_detail, name="checklist"),
    path("checklists/<int:pk>/rename/", views.checklist_rename, name="checklist-rename"),
    path("checklists/<int:pk>/delete/", views.checklist_delete, name="checklist-delete"),
    path("checklists/<int:pk>/items/", views.item_add, name="item-add"),
    path("checklists/<int:pk>/items/<int:item_id>/edit/", views.item_edit, name="item-edit"),
    path("checklists/<int:pk>/items/<int:item_id>/toggle/", views.item_toggle, name="item-toggle"),
    path("checklists/<int:pk>/items/<int:item_id>/move/", views.item_move, name="item-move"),
    path("checklists/<int:pk>/items/<int:item_id>/delete/", views.item_delete, name="item-delete"),
    path("checklists/<int:pk>/members/", views.members_panel, name="members"),
    path("checklists/<int:pk>/members/add/", views.member_add, name="member-add"),
    path("checklists/<int:pk>/members/<int:membership_id>/role/", views.member_role, name="member-role"),
    path("checklists/<int:pk>/members/<int:membership_id>/remove/", views.member_remove, name="member-remove"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
]
