import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sdweb.settings")
django_asgi = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import WebsocketDenier  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousOperation  # noqa: E402
from django.core.handlers.exception import response_for_exception  # noqa: E402
from django.http.request import split_domain_port, validate_host  # noqa: E402

from generation.jobs.routing import websocket_urlpatterns  # noqa: E402


class KeptThreads:
    """Each request's synchronous part (middleware, view, a static file) on a thread kept for later
    requests. Django's ASGI handler starts a thread per request and joins it after: about half a
    millisecond of CPU per request (docs/performance.md). One request at a time per thread, as
    Django's is; a burst's extra threads are let go once it passes. The context is set here, around
    everything, so that Django's own (which defers to an enclosing one) runs its work on this thread."""

    KEEP = 32

    def __init__(self, app):
        self.app, self.idle = app, []

    async def __call__(self, scope, receive, send):
        executor = self.idle.pop() if self.idle else ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            if len(self.idle) < self.KEEP:
                self.idle.append(executor)
            else:
                executor.shutdown(wait=False)


class StaticFiles(ASGIStaticFilesHandler):
    """The app serves its own static files: one process, no separate web server needed. A path
    that climbs out of the static folder is a 400, like any other suspicious request."""

    def serve(self, request):
        try:
            return super().serve(request)
        except SuspiciousOperation as error:
            return response_for_exception(request, error)


def same_origin(origin: str, host: str, secure: bool) -> bool:
    """Whether a socket's Origin is this site: the request's scheme, host and port (the Host being
    an allowed host), or one of SDWEB_CSRF_TRUSTED_ORIGINS."""
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS) and origin == (
        f"{'https' if secure else 'http'}://{host}")


class SameOriginOnly:
    """Refuses a websocket with no Origin, another site's, or this host on another port or scheme."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        # Behind the TLS proxy (production) the scheme the browser used is in X-Forwarded-Proto.
        secure = scope.get("scheme") == "wss" or bool(settings.SECURE_PROXY_SSL_HEADER) and headers.get(
            "x-forwarded-proto") == "https"
        if not same_origin(headers.get("origin", ""), headers.get("host", ""), secure):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


application = ProtocolTypeRouter({
    "http": KeptThreads(StaticFiles(django_asgi)),
    "websocket": SameOriginOnly(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
