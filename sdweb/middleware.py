from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.deprecation import MiddlewareMixin

from generation.accounts.roles import allowances_kept

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",  # no inline scripts anywhere: a prompt that sneaks into a page can't run
    "style-src 'self'",
    "img-src 'self' data:",  # live previews arrive as data: URLs
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
# Django's admin and the API docs carry a few inline style attributes; their scripts are all files.
ADMIN_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


class ContentSecurityPolicy(MiddlewareMixin):
    """The policy on every response. A middleware that runs both ways: under ASGI a sync-only one
    makes Django hop between threads twice more on every request."""

    def process_response(self, request, response):
        relaxed = request.path.startswith(("/admin/", "/api/docs/"))
        response.setdefault("Content-Security-Policy", ADMIN_CSP if relaxed else CSP)
        return response


class OneRequestAnswers:
    """Answers that hold for the whole of a request, worked out once in it (a user's allowance, which
    the studio page asks for a dozen times). Runs both ways, like ContentSecurityPolicy."""

    sync_capable = async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._answer_async(request)
        with allowances_kept():
            return self.get_response(request)

    async def _answer_async(self, request):
        with allowances_kept():
            return await self.get_response(request)
