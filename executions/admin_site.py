"""The operators' admin site: Django's, with the console's dashboard on its index (issue 13, item 5).

Installed as `executions.admin_site.ConsoleAdminConfig` in place of `django.contrib.admin`, which
makes this the default site (`admin.site`) every app's admin registers on.
"""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig


class ConsoleAdminSite(admin.AdminSite):
    index_template = "admin/console_index.html"
    # The app list beside every page takes 300 px of the 1366 an operator's laptop has; the
    # breadcrumbs and the index (the dashboard) lead to the same pages.
    enable_nav_sidebar = False

    def index(self, request, extra_context=None):
        from executions.dashboard import dashboard  # models: only once the apps are loaded
        from executions.stream_tokens import may_view_executions

        context = {"dashboard": dashboard() if may_view_executions(request.user) else None}
        return super().index(request, {**context, **(extra_context or {})})


class ConsoleAdminConfig(AdminConfig):
    default_site = "executions.admin_site.ConsoleAdminSite"
