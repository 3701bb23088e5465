from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import connection, transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from generation.models import CreditAccount
from generation.selectors import default_checkpoint
from generation.services.credits import credits_topup_if_due
from sdweb import services, throttle
from sdweb.celery import app
from sdweb.forms import SignUpForm
from sdweb.models import Invite

TOO_MANY = "Too many attempts. Wait a few minutes and try again."


def studio_context(request):
    """On every page: whether the test model is the one in use, and the user's balance."""
    default = default_checkpoint()
    balance = None
    if request.user.is_authenticated:
        balance = CreditAccount.objects.filter(user=request.user).values_list("balance", flat=True).first() or 0
    return {"test_model_in_use": default is not None and default.is_test_model, "balance": balance,
            "registration": settings.SDWEB["REGISTRATION"]}


def home(request):
    if request.user.is_authenticated:
        return redirect("generate")
    return render(request, "home.html")


class LoginView(auth_views.LoginView):
    """Django's sign-in, throttled per client IP and per account name."""

    def post(self, request, *args, **kwargs):
        limits = settings.SDWEB
        ip, name = throttle.client_ip(request), request.POST.get("username", "").lower()
        throttle.count("login-ip", ip, limits["AUTH_WINDOW_SECONDS"])
        if (throttle.too_many("login-ip", ip, limits["AUTH_ATTEMPTS_PER_IP"], limits["AUTH_WINDOW_SECONDS"])
                or throttle.too_many("login-user", name, limits["AUTH_FAILURES_PER_ACCOUNT"],
                                     limits["AUTH_WINDOW_SECONDS"])):
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, TOO_MANY)
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        name = self.request.POST.get("username", "").lower()
        throttle.count("login-user", name, settings.SDWEB["AUTH_WINDOW_SECONDS"])
        return super().form_invalid(form)


def signup(request, code=None):
    mode = settings.SDWEB["REGISTRATION"]
    invite = get_object_or_404(Invite, code=code, used_by=None) if code else None
    if mode == "closed" or (mode == "invite" and invite is None):
        return render(request, "signup_closed.html", {"mode": mode}, status=403)
    form = SignUpForm(request.POST or None)
    if request.method == "POST":
        limits = settings.SDWEB
        ip = throttle.client_ip(request)
        throttle.count("signup-ip", ip, limits["AUTH_WINDOW_SECONDS"])
        if throttle.too_many("signup-ip", ip, limits["AUTH_ATTEMPTS_PER_IP"], limits["AUTH_WINDOW_SECONDS"]):
            form.add_error(None, TOO_MANY)
            return render(request, "signup.html", {"form": form}, status=429)
        if form.is_valid():
            with transaction.atomic():
                user = form.save()  # the starting grant comes with the account (generation.signals)
                if invite:
                    claimed = Invite.objects.filter(pk=invite.pk, used_by=None).update(used_by=user)
                    if not claimed:
                        transaction.set_rollback(True)
                        return render(request, "signup_closed.html", {"mode": mode}, status=403)
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
    key, raw = services.api_key_create(user=request.user, name=request.POST.get("name", ""))
    return account(request, new_key=raw)  # shown this once, never stored


@login_required
@require_POST
def api_key_revoke(request, key_id):
    if services.api_key_revoke(user=request.user, key_id=key_id):
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
