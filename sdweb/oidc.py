"""Signing in with the organisation's accounts: OpenID Connect through mozilla-django-oidc. The
provider's endpoints come from its discovery document (SDWEB_OIDC_ISSUER); someone is known by the
provider's subject, or by an e-mail address the provider verified; its groups claim decides their
roles (Django groups that have a Role) and teams (those marked `from_sign_in`)."""

import functools
import re

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.http import Http404
from mozilla_django_oidc import auth, views
from mozilla_django_oidc.utils import import_from_settings

from generation.accounts import teams
from generation.accounts.models import StaffEvent, TeamInvite, UserSettings
from generation.accounts.staff import staff_action
from sdweb.shared import throttle
from sdweb.two_factor import PROVIDER

DISCOVERED = {"OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint", "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
              "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint", "OIDC_OP_JWKS_ENDPOINT": "jwks_uri"}


@functools.cache
def discovery() -> dict:
    """The provider's discovery document, read once per process (a failure is not kept)."""
    response = requests.get(settings.SDWEB["OIDC_ISSUER"] + "/.well-known/openid-configuration", timeout=10)
    response.raise_for_status()
    return response.json()


def provider_setting(attr, *args):
    if not settings.SDWEB["OIDC_ISSUER"]:
        raise Http404("no sign-in provider")  # (the sign-in views answer 404 then)
    return discovery()[DISCOVERED[attr]] if attr in DISCOVERED else import_from_settings(attr, *args)


class SignIn(auth.OIDCAuthenticationBackend):
    get_settings = staticmethod(provider_setting)

    def filter_users_by_claims(self, claims):
        users = get_user_model().objects
        known = users.filter(studio_settings__oidc_subject=claims.get("sub"))
        if known.exists() or not (claims.get("email") and claims.get("email_verified")):
            return known
        return users.filter(email__iexact=claims["email"], studio_settings__oidc_subject__isnull=True)

    def verify_claims(self, claims):
        return bool(claims.get("sub"))

    @transaction.atomic
    def create_user(self, claims):
        invited = claims.get("email") and claims.get("email_verified") and TeamInvite.objects.filter(
            email=claims["email"].lower(), accepted_at__isnull=True).exists()
        if settings.SDWEB["OIDC_NEW_ACCOUNTS"] == "invited" and not invited:
            self.request.sign_in_refused = True
            messages.error(self.request, "This studio makes accounts for invited people only; ask its owners for an "
                                         "invitation to the address you sign in with.")
            return None
        user = get_user_model().objects.create_user(_free_username(claims), email=claims.get("email") or "")
        return self.update_user(user, claims)

    def update_user(self, user, claims):
        UserSettings.objects.update_or_create(user=user, defaults={"oidc_subject": claims["sub"]})
        if claims.get("email_verified"):
            for invite in TeamInvite.objects.filter(email=(claims.get("email") or "").lower(), accepted_at__isnull=True):
                teams.team_join(user=user, token=invite.token)
        names = claims.get(settings.SDWEB["OIDC_GROUPS_CLAIM"])
        if isinstance(names, list):  # no claim at all: roles and teams stay as they are
            names = {str(name) for name in names}
            roles = Group.objects.filter(role__isnull=False)
            before = set(user.groups.filter(role__isnull=False).values_list("name", flat=True))
            user.groups.remove(*roles.exclude(name__in=names))
            user.groups.add(*roles.filter(name__in=names))
            after = set(user.groups.filter(role__isnull=False).values_list("name", flat=True))
            if before != after:
                staff_action(staff=None, event=StaffEvent.ROLES_FROM_SIGN_IN, target=user.get_username(),
                             details=f"roles {', '.join(sorted(after)) or 'none'} (were {', '.join(sorted(before)) or 'none'})")
            teams.teams_sync(user=user, names=names)
        return user


def _free_username(claims) -> str:
    """The provider's preferred name (or the e-mail's local part), made a free Django username."""
    wanted = claims.get("preferred_username") or (claims.get("email") or "").split("@")[0] or "member"
    base = re.sub(r"[^\w.@+-]", "", wanted)[:140] or "member"
    taken = set(get_user_model().objects.filter(username__startswith=base).values_list("username", flat=True))
    return next(name for name in (base, *(f"{base}{n}" for n in range(2, 10**6))) if name not in taken)


class SignInStart(views.OIDCAuthenticationRequestView):
    get_settings = staticmethod(provider_setting)


class SignInReturn(views.OIDCAuthenticationCallbackView):
    """The provider's answer. Each one costs a request to the provider: throttled per client."""

    get_settings = staticmethod(provider_setting)

    def get(self, request):
        if throttle.over_limit("oidc-ip", throttle.client_ip(request), settings.SDWEB["AUTH_ATTEMPTS_PER_IP"]):
            return throttle.lockout_response(request)
        return super().get(request)

    def login_success(self):
        self.request.session[PROVIDER] = True  # its own second factor, if any, was the provider's to ask
        return super().login_success()

    def login_failure(self):
        if not getattr(self.request, "sign_in_refused", False):  # (already said why)
            messages.error(self.request, f"Signing in with {settings.SDWEB['OIDC_NAME']} did not work; try again.")
        return super().login_failure()
