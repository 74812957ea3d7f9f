"""A stand-in for a web UI view that writes, to test the provenance middleware on a
non-API, non-admin path (the real UI has its own tests)."""
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from portal.checklists.models import Item


@csrf_exempt
def touch_item(request, pk: int):
    Item.objects.filter(pk=pk).update(done=True)
    return HttpResponse("ok")


urlpatterns = [
    path("ui-write/<int:pk>/", touch_item),
    path("", include("portal.urls")),
]
