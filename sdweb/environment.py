"""Reading settings from the environment: each variable parsed, or a RuntimeError naming it."""

import ipaddress
import os
from pathlib import Path

import dj_database_url

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name) or default


def _parsed(name: str, default, parse, allowed: str):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except ValueError:
        raise RuntimeError(f"{name} must be {allowed} (got {raw!r})") from None


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    value = _parsed(name, default, int, "a whole number")
    if minimum is not None and value < minimum:
        raise RuntimeError(f"{name} must be at least {minimum} (got {value})")
    return value


def env_float(name: str, default: float) -> float:
    return _parsed(name, default, float, "a number")


def env_bool(name: str, default: bool) -> bool:
    def parse(raw):
        if raw.lower() not in _TRUE + _FALSE:
            raise ValueError
        return raw.lower() in _TRUE

    return _parsed(name, default, parse, "one of " + "/".join(_TRUE + _FALSE))


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    def parse(raw):
        if raw not in choices:
            raise ValueError
        return raw

    return _parsed(name, default, parse, "one of " + ", ".join(choices))


def env_networks(name: str) -> list:
    """Comma-separated addresses or networks (10.0.0.0/8)."""
    def parse(raw):
        return [ipaddress.ip_network(part.strip()) for part in raw.split(",") if part.strip()]

    return _parsed(name, [], parse, "addresses or networks separated by commas")


def database_from_url(url: str) -> dict:
    """DATABASE_URL as Django wants it, query options (?sslmode=require ...) included."""
    if not url.startswith(("sqlite:", "postgres:", "postgresql:")):
        raise RuntimeError(f"DATABASE_URL must start with sqlite:// or postgres:// (got {url.split(':')[0]!r})")
    database = dj_database_url.parse(url, conn_max_age=0)
    if not url.startswith("sqlite:"):
        # Under ASGI every request runs on a thread of its own, so connections kept per thread were
        # one per request still open (at 200 people PostgreSQL's 100 ran out): one pool per process,
        # where a request waits for a free connection instead.
        database.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1, "max_size": env_int("SDWEB_DB_POOL_SIZE", 8, minimum=1), "timeout": 30}
    return database




def embedded_secret_key(path: Path) -> str:
    """The embedded default's own random key, made once and kept beside its database: never a
    known key, even when `up --host` puts the studio on a network."""
    import secrets

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()
