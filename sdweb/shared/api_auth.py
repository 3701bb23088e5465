import hashlib
import hmac

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django_otp.plugins.otp_totp.models import TOTPDevice
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from sdweb.shared.api_keys import api_key_user
from sdweb.shared.throttle import TOO_MANY


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
    target_class = "sdweb.shared.api_auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An sdweb API key"}


class CachedBasicAuthentication(authentication.BasicAuthentication):
    """HTTP Basic with the account's username and password, as A1111's `--api-auth`. A locked-out
    name or address is answered 429 before any password is hashed. A password check costs ~0.4 s,
    so a success is remembered for a minute under an HMAC of the pair keyed by the site's secret,
    and only while the account's password is the one that was checked."""

    def authenticate_credentials(self, userid, password, request=None):
        if AxesProxyHandler.is_locked(request, {"username": userid}):
            raise exceptions.Throttled(wait=settings.SDWEB["AUTH_WINDOW_SECONDS"], detail=TOO_MANY)
        key = "basic-auth:" + hmac.new(settings.SECRET_KEY.encode(), f"{userid}\0{password}".encode(),
                                       hashlib.sha256).hexdigest()
        remembered = cache.get(key)
        if remembered is not None:
            user = get_user_model().objects.filter(pk=remembered[0], is_active=True).first()
            if user is not None and remembered[1] == _password_stamp(user):
                return user, None
        user, auth = super().authenticate_credentials(userid, password, request)
        if TOTPDevice.objects.filter(user=user, confirmed=True).exists():  # a password alone is not enough
            raise exceptions.AuthenticationFailed("This account signs in with a second factor: use an API key.")
        cache.set(key, (user.pk, _password_stamp(user)), 60)
        return user, auth


def _password_stamp(user) -> str:
    """Changes whenever the password does, so a remembered check dies with the old password."""
    return hashlib.sha256(user.password.encode()).hexdigest()[:16]
