import hashlib

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


class CachedBasicAuthentication(authentication.BasicAuthentication):
    """HTTP Basic with the account's username and password, as A1111's `--api-auth`. A password
    check costs ~0.4 s, so a success is remembered for a minute under a hash of the pair."""

    def authenticate_credentials(self, userid, password, request=None):
        from django.contrib.auth import get_user_model
        from django.core.cache import cache

        key = "basic-auth:" + hashlib.sha256(f"{userid}\0{password}".encode()).hexdigest()
        user_id = cache.get(key)
        if user_id is not None:
            user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
            if user is not None:
                return user, None
        user, auth = super().authenticate_credentials(userid, password, request)
        cache.set(key, user.pk, 60)
        return user, auth
