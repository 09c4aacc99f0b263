from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from api.http.downloads import download
from ops.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path("files/download/<str:token>", download),
    path("", include("api.agents.urls")),
    path("", include("api.skills.urls")),
    path("", include("api.query.urls")),
]
