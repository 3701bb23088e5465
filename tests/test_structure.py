"""The code's shape, checked: first-party imports form no cycle (function-level imports count),
the engine imports nothing of Django or the apps, services stay clear of the web, the gallery
never reaches into generation's pages or APIs, and web processes never load torch."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("sdweb", "generation", "gallery")
WEB_ONLY = ("django.http", "django.urls", "django.shortcuts", "django.template", "rest_framework", "channels")


def first_party() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                parts = path.relative_to(ROOT).with_suffix("").parts
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file: `from a import b` gives a and a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


MODULES = first_party()
IMPORTS = {name: imported(name, path) for name, path in MODULES.items()}


def edges(name: str) -> set[str]:
    """First-party modules that importing `name` runs, its packages' __init__ files included."""
    targets = set()
    for target in IMPORTS[name]:
        parts = target.split(".")
        targets.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return {t for t in targets if t in MODULES and t != name and not name.startswith(t + ".")}


def test_first_party_imports_form_no_cycle():
    state, path = {}, []

    def visit(name):
        state[name] = "open"
        path.append(name)
        for target in sorted(edges(name)):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = "done"

    for name in sorted(MODULES):
        if name not in state:
            visit(name)


def test_the_engine_imports_nothing_of_django_or_the_apps():
    for name in (n for n in MODULES if n.startswith("generation.engine")):
        outside = {i for i in IMPORTS[name] if i.split(".")[0] in ("django", "rest_framework", "channels", *APPS)
                   and not i.startswith("generation.engine")}
        assert not outside, f"{name} imports {sorted(outside)}"


def test_services_import_nothing_of_the_web():
    for name in (n for n in MODULES if n.startswith("generation.services") or n.endswith(".services")):
        web = {i for i in IMPORTS[name] if i.startswith(WEB_ONLY)}
        assert not web, f"{name} imports {sorted(web)}"


def test_the_gallery_never_imports_generations_pages_or_apis():
    pages = ("generation.views", "generation.api", "generation.compat", "generation.serializers")
    for name in (n for n in MODULES if n.startswith("gallery")):
        reached = {i for i in IMPORTS[name] if i.startswith(pages)}
        assert not reached, f"{name} imports {sorted(reached)}"


def test_web_processes_never_load_torch():
    """The URL conf, the ASGI app, the admin and the task module (which a web process sends to)."""
    script = ("import django, sys; django.setup(); import sdweb.urls, sdweb.asgi, generation.tasks; "
              "from django.contrib import admin; admin.autodiscover(); "
              "from django.test import Client; Client().get('/healthz'); "
              "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
