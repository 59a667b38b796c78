"""URL configuration: admin, health, and the operator API."""

from __future__ import annotations

from django.contrib import admin
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def health(_request: HttpRequest) -> JsonResponse:
    """Liveness plus a database round trip (the one dependency web cannot work without)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
    # Operator JSON API (token auth; routes and shapes in orchestration/api.py).
    path("api/v1/", include("orchestration.api", namespace="api")),
]
