from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("portal.checklists.api.urls")),
    path("", include("portal.checklists.web.urls")),
]
