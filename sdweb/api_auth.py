from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from sdweb.services import api_key_user


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>` with a key from the account page or `create_api_key`."""

    def authenticate(self, request):
        scheme, _, raw = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        found = api_key_user(raw.strip())
        if found is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return found

    def authenticate_header(self, request):
        return 'Bearer realm="sdweb"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "sdweb.api_auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An sdweb API key"}
