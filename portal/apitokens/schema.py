"""Describes token authentication in the OpenAPI schema (loaded by drf-spectacular's
extension registry when this module is imported, from ApiTokensConfig.ready)."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "portal.apitokens.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Token-based authentication: "Token <key>" (or "Bearer <key>").',
        }
