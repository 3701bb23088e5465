"""Production settings, as an operator would check them."""

import subprocess
import sys

from tests.support import ROOT

PRODUCTION = {"SDWEB_ENV": "production", "SDWEB_ALLOWED_HOSTS": "studio.example.com",
              "SECRET_KEY": "k" * 20 + "a-long-random-production-secret-0123456789"}


def manage(*args, **env):
    import os

    environment = {**{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}, **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True,
                          text=True)


def test_check_deploy_reports_nothing_with_production_settings(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", SDWEB_VAR_DIR=str(tmp_path), **PRODUCTION)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = manage("check", SDWEB_VAR_DIR=str(tmp_path), **{**PRODUCTION, "SECRET_KEY": ""})
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_the_embedded_default_makes_and_keeps_its_own_secret_key(tmp_path):
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = manage("shell", "-c", code, SDWEB_VAR_DIR=str(tmp_path), SECRET_KEY="").stdout.strip().splitlines()[-1]
    second = manage("shell", "-c", code, SDWEB_VAR_DIR=str(tmp_path), SECRET_KEY="").stdout.strip().splitlines()[-1]
    assert first == second and len(first) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # readable by its owner only


def setting(code: str, tmp_path, **env) -> str:
    result = manage("shell", "-c", f"from django.conf import settings; print({code})", SDWEB_VAR_DIR=str(tmp_path),
                    **env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_switches_read_true_false_yes_no_one_zero_alike(tmp_path):
    for value, expected in (("true", "True"), ("yes", "True"), ("1", "True"), ("false", "False"), ("0", "False")):
        assert setting("settings.SECURE_SSL_REDIRECT", tmp_path, **PRODUCTION, SDWEB_SSL_REDIRECT=value) == expected


def test_a_setting_it_cannot_read_stops_the_start_naming_the_variable(tmp_path):
    for name, value in (("SDWEB_SSL_REDIRECT", "maybe"), ("SDWEB_MAX_IMAGES", "four"), ("SDWEB_DTYPE", "fp8"),
                        ("SDWEB_REGISTRATION", "sometimes")):
        result = manage("check", SDWEB_VAR_DIR=str(tmp_path), **PRODUCTION, **{name: value})
        assert result.returncode != 0 and f"{name} must be" in result.stderr and repr(value) in result.stderr


def test_database_url_keeps_its_query_options(tmp_path):
    url = "postgres://sdweb:secret@db.example.com:5433/studio?sslmode=require"
    database = setting("settings.DATABASES['default']", tmp_path, DATABASE_URL=url)
    for part in ("'NAME': 'studio'", "'HOST': 'db.example.com'", "'PORT': 5433", "'sslmode': 'require'"):
        assert part in database


def test_healthz_answers_plain_http_in_production_while_pages_redirect(tmp_path):
    code = ("__import__('django.test', fromlist=['Client']).Client(HTTP_HOST='studio.example.com')"
            ".get('{}').status_code")
    assert setting(code.format("/healthz"), tmp_path, **PRODUCTION) == "200"  # load balancers probe over HTTP
    assert setting(code.format("/"), tmp_path, **PRODUCTION) == "301"
