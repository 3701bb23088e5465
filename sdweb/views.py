from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_login_failed
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from generation.accounts.models import TeamMember
from generation.credits.ledger import credits_topup_if_due
from generation.credits.models import CreditAccount
from generation.library.models import Checkpoint
from sdweb import accounts
from sdweb.celery import app
from sdweb.forms import SignUpForm
from sdweb.models import Invite
from sdweb.shared import api_keys, throttle


def studio_context(request):
    """On every page: whether the test model is the one in use (said to signed-in people only),
    their balance and whether they are in a team: one query, on every page."""
    test_model, balance, has_teams = False, None, False
    user = getattr(request, "user", None)  # none on the not-found page of a static file (no middleware ran)
    if user is not None and user.is_authenticated:
        default = Checkpoint.objects.filter(enabled=True).order_by("-is_default", "name")  # as default_checkpoint()
        test_model, balance, has_teams = get_user_model().objects.filter(pk=user.pk).values_list(
            Subquery(default.values("is_test_model")[:1]),
            Coalesce(Subquery(CreditAccount.objects.filter(user=OuterRef("pk")).values("balance")[:1]), 0),
            Exists(TeamMember.objects.filter(user=OuterRef("pk")))).get()
    return {"test_model_in_use": bool(test_model), "balance": balance,
            "registration": settings.SDWEB["REGISTRATION"] if settings.SDWEB["LOCAL_PASSWORDS"] else "closed",
            "local_passwords": settings.SDWEB["LOCAL_PASSWORDS"],
            "oidc_name": settings.SDWEB["OIDC_NAME"] if settings.SDWEB["OIDC_ISSUER"] else "",
            "has_teams": has_teams}


def home(request):
    if request.user.is_authenticated:
        return redirect("generate")
    return render(request, "home.html")


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change. A wrong current password counts as a failed sign-in of the
    account (Django's form checks it without authenticate(), so axes would not see it)."""

    def post(self, request, *args, **kwargs):
        if AxesProxyHandler.is_locked(request, {"username": request.user.get_username()}):
            return throttle.lockout_response(request)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        if "old_password" in form.errors:
            user_login_failed.send(sender=__name__, credentials={"username": self.request.user.get_username()},
                                   request=self.request)
        return super().form_invalid(form)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's password reset, at most SDWEB_RESETS_PER_WINDOW mails per address and per client."""

    def post(self, request, *args, **kwargs):
        if not settings.SDWEB["LOCAL_PASSWORDS"]:
            raise Http404
        limit = settings.SDWEB["RESETS_PER_WINDOW"]
        email = request.POST.get("email", "").strip().casefold()
        if (throttle.over_limit("reset-ip", throttle.client_ip(request), limit)
                or throttle.over_limit("reset-email", email, limit)):
            return throttle.lockout_response(request)
        return super().post(request, *args, **kwargs)


class InviteTaken(Exception):
    pass


def signup(request, code=None):
    mode = settings.SDWEB["REGISTRATION"] if settings.SDWEB["LOCAL_PASSWORDS"] else "closed"
    invite = get_object_or_404(Invite, code=code, used_by=None) if code else None
    if mode == "closed" or (mode == "invite" and invite is None):
        return render(request, "signup_closed.html", {"mode": mode}, status=403)
    form = SignUpForm(request.POST or None)
    if request.method == "POST":
        if throttle.over_limit("signup-ip", throttle.client_ip(request), settings.SDWEB["AUTH_ATTEMPTS_PER_IP"]):
            form.add_error(None, throttle.TOO_MANY)
            return render(request, "signup.html", {"form": form}, status=429)
        if form.is_valid():
            try:
                with transaction.atomic():
                    user = form.save()  # the starting grant comes with the account (generation.apps)
                    if invite and not Invite.objects.filter(pk=invite.pk, used_by=None).update(used_by=user):
                        raise InviteTaken  # another sign-up used it first: undo this account
            except InviteTaken:
                return render(request, "signup_closed.html", {"mode": mode}, status=403)
            except IntegrityError:  # the same name signed up a moment earlier
                form.add_error("username", "A user with that username already exists.")
                return render(request, "signup.html", {"form": form}, status=400)
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome! You have {settings.SDWEB['STARTING_CREDITS']} credits to start.")
            return redirect("generate")
    return render(request, "signup.html", {"form": form})


@login_required
def account(request, new_key=None):
    credits_topup_if_due(user=request.user)
    account, _ = CreditAccount.objects.get_or_create(user=request.user)
    return render(request, "account.html", {
        "account": account,
        "entries": account.entries.select_related("job")[:50],
        "jobs": request.user.jobs.select_related("checkpoint")[:20],
        "api_keys": request.user.api_keys.filter(revoked_at=None),
        "new_key": new_key,
    })


@login_required
def api_key_create(request):
    if request.method != "POST":  # a reload of the page that showed a new key shows it no more
        return redirect("account")
    key, raw = api_keys.api_key_create(user=request.user, name=request.POST.get("name", ""))
    response = account(request, new_key=raw)  # shown this once, never stored
    response["Cache-Control"] = "no-store"  # nor kept by the browser or a proxy
    return response


@login_required
@require_POST
def api_key_revoke(request, key_id):
    if api_keys.api_key_revoke(user=request.user, key_id=key_id):
        messages.success(request, "API key revoked; it stops working at once.")
    return redirect("account")


def healthz(request):
    """Reachability of the database, the broker and the channel layer, for load balancers."""
    checks = {}
    for name, probe in (("database", _probe_database), ("broker", _probe_broker), ("channel_layer", _probe_layer)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as error:  # any failure means "not healthy"; its type is enough to act on
            checks[name] = f"error: {type(error).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if healthy else "unhealthy", **checks}, status=200 if healthy else 503)


def _probe_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _probe_broker():
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _probe_layer():
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    async_to_sync(get_channel_layer().group_send)("healthz", {"type": "healthz"})


@login_required
def account_delete(request):
    error, by_name = None, not request.user.has_usable_password()  # signed in with the provider: type the name
    if request.method == "POST":
        if (request.POST.get("username") == request.user.get_username() if by_name else
                authenticate(request, username=request.user.get_username(), password=request.POST.get("password", ""))):
            accounts.account_delete(user=request.user)
            messages.success(request, "Your account, images and files are deleted.")
            return redirect("home")
        error = "That name is not yours." if by_name else "That password is not right."
    return render(request, "account_delete.html", {"error": error, "by_name": by_name}, status=400 if error else 200)
