from django.apps import AppConfig


class ApiTokensConfig(AppConfig):
    name = "portal.apitokens"
    label = "apitokens"
    verbose_name = "API tokens"

    def ready(self) -> None:
        from . import schema  # noqa: F401  (registers the OpenAPI description)
