from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from . import views

urlpatterns = [
    path("checklists/", views.ChecklistListView.as_view(), name="api-checklists"),
    path("checklists/<int:pk>/", views.ChecklistDetailView.as_view(), name="api-checklist"),
    path("checklists/<int:pk>/items/", views.ItemListView.as_view(), name="api-checklist-items"),
    path("checklists/<int:pk>/items/batch/", views.ItemBatchView.as_view(), name="api-checklist-items-batch"),
    path("checklists/<int:pk>/members/", views.MemberListView.as_view(), name="api-checklist-members"),
    path("checklists/<int:pk>/members/<str:username>/", views.MemberDetailView.as_view(), name="api-checklist-member"),
    path("items/<int:pk>/", views.ItemDetailView.as_view(), name="api-item"),
    path("sync/token/", views.SyncTokenView.as_view(), name="api-sync-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves the page's script as a file (?script): no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Redoc styles itself with injected <style> elements and runs its search in a blob:
    # worker: this page alone allows both (never inline scripts).
    path("redoc/", csp_update({"style-src": [UNSAFE_INLINE], "worker-src": ["blob:"]})(
        SpectacularRedocView.as_view(url_name="api-schema")), name="api-redoc"),
]
