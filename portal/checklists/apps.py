from django.apps import AppConfig


class ChecklistsConfig(AppConfig):
    name = "portal.checklists"
    label = "checklists"
    verbose_name = "Checklists"

    def ready(self) -> None:
        from portal import deploychecks  # noqa: F401  (registers the development-secret checks)
