"""Browser journeys: Playwright driving Debian's Chromium against `manage.py up`, one studio
process shared by every journey. Each journey signs up its own users."""


import pytest

from tests.support import CHROMIUM, FLAGS, PHONE, OidcProvider, Studio

# The school's own accounts, at the test OpenID Connect provider the studio signs in with.
SCHOOL = [{"username": "student1", "email": "student1@school.example", "password": "student-pass-1",
           "groups": ["students", "Physics 101"]}]


@pytest.fixture(scope="session")
def studio(tmp_path_factory):
    # Every journey signs its own users up, all from one address: more than the throttle's 20 a window.
    studio = Studio(tmp_path_factory.mktemp("e2e-studio"), SDWEB_AUTH_ATTEMPTS_PER_IP="200")
    studio.provider = OidcProvider(tmp_path_factory.mktemp("e2e-idp"), SCHOOL, [f"{studio.base}/oidc/callback/"]).start()
    studio.settings |= studio.provider.settings()
    studio.start()
    yield studio
    studio.stop()
    studio.provider.stop()


@pytest.fixture(scope="module")
def browser():
    """Chromium through Playwright's sync API, whose event loop stays set on this thread while it
    runs (Django refuses database work under it): closed after the journeys, before other tests."""
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


