from django.apps import AppConfig


class ChecklistsConfig(AppConfig):
    name = "portal.checklists"
    label = "checklists"
    verbose_name = "Checklists"
