"""Signing in with the organisation's accounts (issue 31): the studio as an OpenID Connect client
(mozilla-django-oidc) against a real provider (django-oidc-provider) in a process of its own."""

import re
import urllib.parse

import pytest
import requests
from django.contrib.auth.models import Group, User
from django.test import Client

from generation.accounts.models import Role, StaffAction, Team, TeamInvite, TeamMember
from generation.credits.ledger import team_credits_grant
from sdweb import oidc
from tests.support import OidcProvider

PEOPLE = [
    {"username": "stu", "email": "stu@school.example", "password": "stu-password-1", "groups": ["students", "Physics 101"]},
    {"username": "newbie", "email": "newbie@school.example", "password": "newbie-password-1"},
]


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    provider = OidcProvider(tmp_path_factory.mktemp("idp"), PEOPLE, ["http://testserver/oidc/callback/"]).start()
    yield provider
    provider.stop()


@pytest.fixture
def signs_in(provider, settings, db):
    """The studio set up for the provider, as SDWEB_OIDC_* would (each test reads its discovery anew)."""
    env = provider.settings()
    settings.SDWEB = {**settings.SDWEB, "OIDC_ISSUER": env["SDWEB_OIDC_ISSUER"], "OIDC_NAME": "Example School"}
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, "sdweb.oidc.SignIn"]
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET = "sdweb", provider.SECRET
    settings.OIDC_RP_SIGN_ALGO, settings.OIDC_RP_SCOPES = "RS256", env["SDWEB_OIDC_SCOPES"]
    settings.OIDC_USE_PKCE, settings.LOGIN_REDIRECT_URL_FAILURE = True, "/accounts/login/"
    oidc.discovery.cache_clear()
    yield
    oidc.discovery.cache_clear()


def sign_in(client: Client, username: str, password: str):
    """Press "Sign in with Example School", sign in at the provider, come back: the studio's answer."""
    start = client.get("/oidc/authenticate/")
    assert start.status_code == 302
    at_provider = requests.Session()
    login = at_provider.get(start["Location"])
    assert "Example School" in login.text
    back = at_provider.post(login.url, allow_redirects=False, data={
        "username": username, "password": password, "csrfmiddlewaretoken": at_provider.cookies["idp_csrftoken"],
        "next": urllib.parse.parse_qs(urllib.parse.urlsplit(login.url).query)["next"][0]})
    authorised = at_provider.get(urllib.parse.urljoin(login.url, back.headers["Location"]), allow_redirects=False)
    callback = urllib.parse.urlsplit(authorised.headers["Location"])
    assert callback.netloc == "testserver", authorised.headers["Location"]
    return client.get(f"{callback.path}?{callback.query}")


@pytest.fixture
def school(db, admin):
    """A role "students" and a team "Physics 101" whose members follow the provider's groups."""
    Role.objects.create(group=Group.objects.create(name="students"), max_side=512)
    team = Team.objects.create(name="Physics 101", slug="physics-101", from_sign_in=True)
    team_credits_grant(team=team, amount=40, reason="the term's credits", staff=admin)
    return team


def test_a_first_sign_in_makes_the_account_in_its_role_and_team_and_api_keys_work(signs_in, school, checkpoint):
    client = Client()
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in with Example School" in page and 'name="password"' in page
    response = sign_in(client, "stu", "stu-password-1")
    assert response.status_code == 302 and response["Location"] == "/generate/"
    stu = User.objects.get(username="stu")
    assert stu.email == "stu@school.example" and not stu.has_usable_password()
    assert list(stu.groups.values_list("name", flat=True)) == ["students"]
    assert TeamMember.objects.get(user=stu).team == school
    assert StaffAction.objects.filter(action="roles from sign-in", target="stu", details="roles students (were none)",
                                      staff_name="system").exists()
    assert StaffAction.objects.filter(action="team join", target="team Physics 101").exists()
    created = client.post("/account/api-keys/", {"name": "script"}).content.decode()
    key = re.search(r'<code id="new-key">([^<]+)</code>', created).group(1)
    job = Client().post("/api/v1/jobs/", {"prompt": "a comet", "checkpoint": checkpoint.name, "width": 256, "height": 256,
                                          "steps": 2}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert job.status_code == 201 and job.json()["team"] == "physics-101"  # the team's pool pays
    refused = Client().post("/api/v1/jobs/", {"prompt": "a comet", "checkpoint": checkpoint.name, "width": 768,
                                              "height": 768, "steps": 2, "team": "own"}, content_type="application/json",
                            HTTP_AUTHORIZATION=f"Bearer {key}")
    assert refused.status_code == 403 and "at most 512 for your role (students)" in refused.json()["detail"]


def test_signing_in_again_is_the_same_account_and_the_provider_decides_roles_and_teams(signs_in, school):
    sign_in(Client(), "stu", "stu-password-1")
    stu = User.objects.get(username="stu")
    stu.groups.clear()  # changed here; the provider says otherwise at the next sign-in
    TeamMember.objects.filter(user=stu).delete()
    User.objects.create_user("newbie")  # a local name taken: the provider's newbie gets another
    assert sign_in(Client(), "stu", "stu-password-1").status_code == 302
    assert User.objects.filter(email="stu@school.example").count() == 1
    assert stu.groups.filter(name="students").exists() and TeamMember.objects.filter(user=stu, team=school).exists()
    sign_in(Client(), "newbie", "newbie-password-1")
    assert User.objects.get(email="newbie@school.example").username == "newbie2"


def test_a_local_account_with_the_verified_address_is_the_one_signed_into(signs_in, school):
    local = User.objects.create_user("stuart", email="STU@school.example", password="a local password")
    client = Client()
    sign_in(client, "stu", "stu-password-1")
    assert client.get("/account/").context["user"] == local and User.objects.count() == 2  # (and the admin)


def test_invited_people_only_when_so_set(signs_in, school, settings, alice):
    settings.SDWEB = {**settings.SDWEB, "OIDC_NEW_ACCOUNTS": "invited"}
    client = Client()
    refused = sign_in(client, "newbie", "newbie-password-1")
    assert refused["Location"] == "/accounts/login/" and not User.objects.filter(email="newbie@school.example").exists()
    assert "accounts for invited people only" in client.get("/accounts/login/").content.decode()
    club = Team.objects.create(name="Chess club", slug="chess")  # (a team of its own, not the provider's)
    TeamMember.objects.create(team=club, user=alice, role="owner")
    TeamInvite.objects.create(team=club, email="newbie@school.example", token="t" * 43, invited_by=alice)
    assert sign_in(Client(), "newbie", "newbie-password-1")["Location"] == "/generate/"
    newbie = User.objects.get(email="newbie@school.example")
    assert TeamMember.objects.filter(team=club, user=newbie).exists()  # the invitation is taken up


def test_with_local_passwords_off_only_the_provider_signs_anyone_in(signs_in, settings, alice):
    settings.SDWEB = {**settings.SDWEB, "LOCAL_PASSWORDS": False}
    settings.AUTHENTICATION_BACKENDS = [b for b in settings.AUTHENTICATION_BACKENDS if not b.endswith("ModelBackend")]
    client = Client()
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in with Example School" in page and 'name="password"' not in page
    wrong = client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"})
    assert wrong.status_code == 200 and "_auth_user_id" not in client.session
    assert client.get("/accounts/signup/").status_code == 403
    assert sign_in(client, "newbie", "newbie-password-1")["Location"] == "/generate/"


def test_without_a_provider_the_sign_in_routes_are_not_there(client, db):
    assert client.get("/oidc/authenticate/").status_code == 404
    assert "Sign in with" not in client.get("/accounts/login/").content.decode()
