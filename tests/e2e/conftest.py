"""Browser journeys: Playwright driving Debian's Chromium against `manage.py up`, one studio
process shared by every journey. Each journey signs up its own users."""

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdweb.test_up import ROOT, Studio

SCREENS = Path(__file__).parent / "screens"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PHONE = {"width": 390, "height": 844}
_names = itertools.count(1)


@pytest.fixture(scope="session")
def studio(tmp_path_factory):
    studio = Studio(tmp_path_factory.mktemp("e2e-studio"))
    studio.start()
    yield studio
    studio.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, studio):
    """new_page(phone=False): a fresh browser context (its own cookies) on the studio."""
    contexts = []

    def new_page(phone=False):
        # The browser ignores our CSP so that Playwright's polling can evaluate: the journeys then
        # prove that escaping alone keeps hostile prompts inert (the CSP is checked separately).
        context = browser.new_context(viewport=PHONE if phone else {"width": 1280, "height": 900},
                                      base_url=studio.base, accept_downloads=True, bypass_csp=True)
        context.set_default_timeout(60_000)
        contexts.append(context)
        page = context.new_page()
        page.dialogs = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        return page

    yield new_page
    for context in contexts:
        context.close()


def sign_up(page, name=None) -> str:
    name = name or f"user{next(_names)}"
    page.goto("/accounts/signup/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill("a-long-pass-123")
    page.get_by_label("Password confirmation").fill("a-long-pass-123")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/generate/")
    return name


def generate(page, prompt="a lighthouse at dusk", steps=4, images=2, size=256, wait=True):
    """Fill the studio form and submit; wait for the images unless told not to."""
    page.goto("/generate/")
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Size").select_option(f"{size}x{size}")
    page.get_by_label("Steps").fill(str(steps))
    page.get_by_label("Images").fill(str(images))
    page.get_by_role("button", name="Generate").click()
    page.wait_for_url("**/generate/?job=*")
    if wait:
        page.wait_for_function(f"document.querySelectorAll('#images img').length == {images}")
    return page.url.split("job=")[1]


def balance(page) -> int:
    return int(page.locator("#balance").text_content())


def screenshot(page, name):
    """Save the page as a person sees it, on a desktop and on a phone, for a look by eye."""
    SCREENS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENS / f"{name}.png", full_page=True)
    phone = page.context.browser.new_context(viewport=PHONE, storage_state=page.context.storage_state(),
                                             base_url=page.url, bypass_csp=True)
    try:
        phone_page = phone.new_page()
        phone_page.goto(page.url)
        phone_page.screenshot(path=SCREENS / f"{name}-phone.png", full_page=True)
    finally:
        phone.close()


def make_admin(studio, name="boss") -> str:
    env = {**studio.env(), "DJANGO_SUPERUSER_PASSWORD": "admin-pass-123"}
    subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", name,
                    "--email", f"{name}@example.com"], cwd=ROOT, env=env, check=True, capture_output=True)
    return name


def staff_page(new_page, studio, name):
    """A page signed in as a new superuser called `name`."""
    make_admin(studio, name)
    page = new_page()
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill("admin-pass-123")
    page.get_by_role("button", name="Log in").click()
    return page
