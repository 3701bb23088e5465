"""A second factor for local accounts (TOTP, by django-otp): set up on the account page with any
authenticator app; then a password alone signs no one in: the sign-in page (and the admin's) asks
for the app's code next, and HTTP Basic refuses the account (API keys still work). With
SDWEB_STAFF_TWO_FACTOR, staff must have one to use the admin and staff pages (those who signed in
with the organisation's provider are left to it)."""

import base64
import io

import django_otp
import qrcode
import qrcode.image.svg
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django_otp.plugins.otp_totp.models import TOTPDevice

from sdweb.shared import throttle

PENDING = "sdweb_second_factor_pending"  # the session's user who gave the right password, and where to go
PROVIDER = "sdweb_signed_in_with_provider"


def second_factor(user) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first() if user.is_authenticated else None


class SignInView(auth_views.LoginView):
    """Django's sign-in; for an account with a second factor the password only leads to the code page."""

    def form_valid(self, form):
        user = form.get_user()
        if second_factor(user) is None:
            return super().form_valid(form)
        self.request.session[PENDING] = {"user": user.pk, "backend": user.backend, "next": self.get_success_url()}
        return redirect("sign-in-code")


class AdminSignInView(SignInView):
    """The admin's own sign-in page, with the same second step."""

    template_name = "admin/login.html"
    authentication_form = AdminAuthenticationForm

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), **admin.site.each_context(self.request), "title": "Log in",
                "app_path": self.request.get_full_path(), "username": self.request.user.get_username()}

    def get_default_redirect_url(self):
        return "/admin/"


def sign_in_code(request):
    """The second step: the authenticator's code, throttled per account and per client."""
    pending = request.session.get(PENDING)
    user = get_user_model().objects.filter(pk=pending["user"], is_active=True).first() if pending else None
    if user is None:
        return redirect("login")
    error = None
    if request.method == "POST":
        limit = settings.SDWEB["AUTH_FAILURES_PER_ACCOUNT"]
        if (throttle.over_limit("totp-user", str(user.pk), limit)
                or throttle.over_limit("totp-ip", throttle.client_ip(request), settings.SDWEB["AUTH_ATTEMPTS_PER_IP"])):
            return throttle.lockout_response(request)
        device = second_factor(user)
        if device is not None and device.verify_token(request.POST.get("code", "").replace(" ", "")):
            del request.session[PENDING]
            login(request, user, backend=pending["backend"])
            django_otp.login(request, device)
            allowed = url_has_allowed_host_and_scheme(pending["next"], {request.get_host()}, request.is_secure())
            return redirect(pending["next"] if allowed else settings.LOGIN_REDIRECT_URL)
        error = "That code is not right, or it is too old: enter the one your app shows now."
    return render(request, "registration/code.html", {"error": error}, status=400 if error else 200)


@login_required
def two_factor_setup(request):
    """Turn the second factor on (scan, then enter a code to confirm) or off (with a current code)."""
    if not request.user.has_usable_password():
        return render(request, "two_factor.html", {"by_provider": True})
    device = second_factor(request.user)
    error = None
    if request.method == "POST":
        action = request.POST.get("action", "on")
        pending = device or TOTPDevice.objects.filter(user=request.user, confirmed=False).first()
        if pending is None or not pending.verify_token(request.POST.get("code", "").replace(" ", "")):
            error = "That code is not right: enter the one your app shows now."
        elif device is None:
            TOTPDevice.objects.filter(pk=pending.pk).update(confirmed=True)
            django_otp.login(request, pending)
            messages.success(request, "Second factor on: signing in now asks for your app's code.")
            return redirect("account")
        elif action == "off":
            device.delete()
            messages.success(request, "Second factor off: your password alone signs you in again.")
            return redirect("account")
        else:  # this session proves it now (staff pages ask for that)
            django_otp.login(request, device)
            return redirect(request.GET.get("next") if url_has_allowed_host_and_scheme(
                request.GET.get("next"), {request.get_host()}, request.is_secure()) else "account")
    if device is not None:
        return render(request, "two_factor.html", {"device": device, "error": error}, status=400 if error else 200)
    pending, _ = TOTPDevice.objects.get_or_create(user=request.user, confirmed=False, defaults={"name": "authenticator"})
    svg = io.BytesIO()
    qrcode.make(pending.config_url, image_factory=qrcode.image.svg.SvgPathImage).save(svg)
    return render(request, "two_factor.html", {
        "qr": "data:image/svg+xml;base64," + base64.b64encode(svg.getvalue()).decode(),
        "secret": base64.b32encode(pending.bin_key).decode(), "error": error}, status=400 if error else 200)


class StaffSecondFactor:
    """With SDWEB_STAFF_TWO_FACTOR, the admin and staff pages send staff without a verified second
    factor (and not signed in with the provider) to set one up."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if (settings.SDWEB["STAFF_TWO_FACTOR"] and user.is_authenticated and user.is_staff
                and request.path.startswith(("/admin/", "/staff/")) and not request.path.startswith("/admin/login/")
                and not user.is_verified() and not request.session.get(PROVIDER)):
            messages.warning(request, "Staff pages need a second factor: set one up here, or enter your code.")
            return redirect(reverse("two-factor") + "?" + urlencode({"next": request.get_full_path()}))
        return self.get_response(request)
