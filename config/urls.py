from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from api.frontdoor.views import index
from api.http import errors
from api.http.downloads import download
from ops.health import healthz, livez, readyz
from ops.metrics import metrics

# The schema and its two docs pages (Swagger UI, Redoc; their assets from drf-spectacular-sidecar) need no key.
PUBLIC = {"authentication_classes": [], "permission_classes": []}

urlpatterns = [
    path("", index, name="frontdoor"),  # the browser front door (api/frontdoor/)
    path("admin/", admin.site.urls),
    # answered by ops.health.ProbesMiddleware before the host check; routed too, for the URL conf's walkers
    path("healthz", healthz),
    path("livez", livez),
    path("readyz", readyz),
    path("metrics", metrics),
    path("api/schema/", SpectacularAPIView.as_view(**PUBLIC), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", **PUBLIC), name="swagger-ui"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html", **PUBLIC),
        name="redoc",
    ),
    path("files/download/<str:token>", download),
    path("", include("api.agents.urls")),
    path("", include("api.skills.urls")),
    path("", include("api.query.urls")),
    path("", include("api.inbound.urls")),
    path("", include("api.webhooks.urls")),
    path("", include("api.schedules.urls")),
]

# JSON error pages on the API's routes (the admin keeps Django's HTML ones).
handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.page_not_found
handler500 = errors.server_error
