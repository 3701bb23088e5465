import os
from pathlib import Path

SECRET_KEY = "test provider only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions", "oidc_provider"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware", "django.middleware.csrf.CsrfViewMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware"]
ROOT_URLCONF = "tests.oidc_idp.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "DIRS": [Path(__file__).parent / "templates"],
              "OPTIONS": {"context_processors": ["django.template.context_processors.request"]}}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("IDP_DATABASE", ":memory:")}}
USE_TZ = True
LOGIN_URL = "/accounts/login/"
# Its own cookie names: the studio runs on the same host (cookies ignore the port).
SESSION_COOKIE_NAME, CSRF_COOKIE_NAME = "idp_sessionid", "idp_csrftoken"
SITE_URL = os.environ.get("IDP_SITE_URL", "http://127.0.0.1")
OIDC_USERINFO = "tests.oidc_idp.claims.userinfo"
OIDC_EXTRA_SCOPE_CLAIMS = "tests.oidc_idp.claims.GroupClaims"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
