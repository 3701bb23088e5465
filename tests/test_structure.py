"""The code's shape, checked: first-party imports form no cycle (function-level imports count), the
domains depend one way, the engine imports nothing of Django or the apps, services stay clear of
the web, only the gallery writes its rows, modules and functions stay short enough to read, and
web processes never load torch."""

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


# The domains, lowest first: each may import those before it, never one after it. The pages, APIs,
# admin, tasks and management commands sit on top of them all.
DOMAINS = ("sdweb.shared", "generation.engine", "generation.accounts", "gallery", "generation.library",
           "generation.credits", "generation.provenance", "generation.jobs", "generation.dialects",
           "generation.monitoring")
BELOW_ALL = ("sdweb.models", "sdweb.celery", "generation.untrusted_images")  # no app imported: any domain may use them
PAGES = ("views", "api", "admin", "forms", "urls", "apps")  # a domain's web modules are on top too


def domain(name: str) -> str | None:
    if name.rpartition(".")[2] in PAGES:
        return None
    return next((d for d in DOMAINS if name == d or name.startswith(d + ".")), None)


def test_the_domains_depend_one_way_lowest_first():
    for name in (n for n in MODULES if domain(n)):
        home = domain(name)
        for target in edges(name) - {*BELOW_ALL, *APPS}:  # an app's own package file imports nothing of it
            there = domain(target)
            assert there is not None, f"{name} ({home}) imports {target}, which is above every domain"
            assert DOMAINS.index(there) <= DOMAINS.index(home), f"{name} ({home}) imports {target} ({there})"
    for name in BELOW_ALL:
        assert not {t for t in edges(name) if t.startswith(APPS)}, f"{name} imports the apps"


def test_the_domains_import_nothing_of_the_web():
    """The dialects are APIs and sdweb.shared holds the web helpers; jobs' web face is its presenters
    (what pages, APIs and sockets show, with links), live (events through the channel layer), its
    consumer and routing (the live view's socket). The rest of every domain is plain Python over
    Django's models."""
    web_face = ("generation.dialects", "sdweb.shared", "generation.jobs.presenters", "generation.jobs.live",
                "generation.jobs.consumers", "generation.jobs.routing")
    for name in (n for n in MODULES if domain(n) and not n.startswith(web_face)):
        web = {i for i in IMPORTS[name] if i.startswith(WEB_ONLY)}
        assert not web, f"{name} imports {sorted(web)}"


def test_only_the_gallery_writes_its_rows():
    """Generation publishes a job's images through gallery.services; nothing else creates, changes
    or deletes gallery rows."""
    writes = {"create", "bulk_create", "update", "delete", "get_or_create", "update_or_create", "save"}
    for name, path in MODULES.items():
        if name == "sdweb.management.commands.fill_at_size":  # fills a benchmark database with bulk inserts
            continue
        if name.startswith("gallery") or not {"gallery.models.Image", "gallery.models.Report"} & IMPORTS[name]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            assert not (isinstance(node.func, ast.Name) and node.func.id in ("Image", "Report")), \
                f"{name} makes a gallery row itself (line {node.lineno})"
            if isinstance(node.func, ast.Attribute) and node.func.attr in writes:
                base = node.func.value
                while isinstance(base, (ast.Attribute, ast.Call)):
                    base = base.func if isinstance(base, ast.Call) else base.value
                assert not (isinstance(base, ast.Name) and base.id in ("Image", "Report")), \
                    f"{name} writes gallery rows itself (line {node.lineno})"


def test_no_module_over_400_lines_and_no_function_over_80():
    for name, path in MODULES.items():
        text = path.read_text()
        assert len(text.splitlines()) <= 400, f"{name} has {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{name}.{node.name} has {length} lines"


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
