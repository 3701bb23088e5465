"""Concurrency where money is involved, on PostgreSQL (row locks do nothing on SQLite)."""

RACE = """
import threading
from concurrent.futures import ThreadPoolExecutor
from django.contrib.auth.models import User
from django.db import connection
from generation.provenance.audit import audit_verify as verify
from generation.credits.models import CreditAccount
from generation.jobs.models import Job
from generation.provenance.models import PromptAudit
from generation.library.checkpoints import checkpoint_ensure_test_model
from generation.credits.ledger import credits_change
from generation.jobs.submit import Refused, job_submit

checkpoint = checkpoint_ensure_test_model()
user = User.objects.create_user(USERNAME)
credits_change(user=user, kind="adjust", amount=10 - user.credits.balance, reason="exactly ten")
ROLE
params = {"prompt": "a race", "checkpoint": checkpoint, "width": 256, "height": 256, "steps": 2,
          "guidance_scale": 7, "scheduler": "Euler a", "seed": 1, "num_images": 1}
start = threading.Barrier(THREADS)

def submit(i):
    start.wait()
    try:
        return str(job_submit(user=user, params=params, idempotency_key=KEY).pk)
    except Refused as refusal:
        return refusal.code
    finally:
        connection.close()

with ThreadPoolExecutor(THREADS) as pool:
    results = list(pool.map(submit, range(THREADS)))
account = CreditAccount.objects.get(user=user)
print(json.dumps({"results": results, "balance": account.balance,
                  "ledger": sum(account.entries.values_list("amount", flat=True)),
                  "jobs": Job.objects.filter(user=user).count(),
                  "charges": account.entries.filter(kind="charge").count(),
                  "audit_rows": PromptAudit.objects.filter(user=user).count(),
                  "unsealed": PromptAudit.objects.filter(position=None).count(), "chain": verify()}))
"""


CAPPED = """
from django.contrib.auth.models import Group
from generation.accounts.models import Role
role = Role.objects.create(group=Group.objects.create(name="capped"), active_jobs=3)
user.groups.add(role.group)
"""


def race(production, username, threads, key=None, role=""):
    code = RACE.replace("USERNAME", repr(username)).replace("THREADS", str(threads)).replace("KEY", repr(key))
    return production.script(code.replace("ROLE", role))


def test_50_concurrent_submissions_with_credit_for_10_accept_exactly_10(production):
    outcome = race(production, "racer", 50)
    refused = [r for r in outcome["results"] if r == "insufficient_credits"]
    assert (len(outcome["results"]) - len(refused), len(refused)) == (10, 40)
    assert outcome["balance"] == 0 == outcome["ledger"]
    assert outcome["jobs"] == outcome["charges"] == 10
    assert outcome["audit_rows"] == 50 and outcome["chain"][1] is None, outcome["chain"]  # 50 writers, one chain
    # No writer waited for another's seal, and none left a row unsealed: each sealer looks again after it lets go.
    assert outcome["unsealed"] == 0


def test_concurrent_retries_with_one_idempotency_key_make_one_job_and_one_charge(production):
    outcome = race(production, "retrier", 12, key="same-key")
    assert len(set(outcome["results"])) == 1  # every retry got the same job id
    assert outcome["jobs"] == outcome["charges"] == 1
    assert outcome["balance"] == 9 == outcome["ledger"]


def test_20_concurrent_submissions_in_a_role_of_3_jobs_at_once_accept_exactly_3(production):
    """The role's cap is checked under the same row lock as the balance: no overshoot."""
    outcome = race(production, "student", 20, role=CAPPED)
    refused = [r for r in outcome["results"] if r == "active_job_cap"]
    assert (len(outcome["results"]) - len(refused), len(refused)) == (3, 17)
    assert outcome["jobs"] == outcome["charges"] == 3 and outcome["balance"] == 7 == outcome["ledger"]


QUOTA = """
from django.contrib.auth.models import Group
from generation.accounts.models import Role
role = Role.objects.create(group=Group.objects.create(name="quota"), storage_mb=1)
user.groups.add(role.group)
"""


def test_20_concurrent_submissions_with_room_for_4_jobs_images_accept_exactly_4(production):
    """A 256 px image may take 3 bytes a pixel and a thumbnail's 64 KiB until stored: a quarter MB. The
    room a job holds is counted under the same row lock as the balance: no overshoot."""
    outcome = race(production, "collector", 20, role=QUOTA)
    refused = [r for r in outcome["results"] if r == "storage_full"]
    assert (len(outcome["results"]) - len(refused), len(refused)) == (4, 16)
    assert outcome["jobs"] == outcome["charges"] == 4 and outcome["balance"] == 6 == outcome["ledger"]


TEAM_RACE = """
import threading
from concurrent.futures import ThreadPoolExecutor
from django.contrib.auth.models import User
from django.db import connection
from generation.accounts.models import Team, TeamMember
from generation.credits.ledger import team_credits_grant
from generation.credits.models import CreditAccount
from generation.jobs.models import Job
from generation.jobs.submit import Refused, job_submit
from generation.library.checkpoints import checkpoint_ensure_test_model

checkpoint = checkpoint_ensure_test_model()
team = Team.objects.create(name="racers", slug="racers")
members = [User.objects.create_user(f"member{n}") for n in range(2)]
for member in members:
    TeamMember.objects.create(team=team, user=member)
team_credits_grant(team=team, amount=5, reason="five", staff=User.objects.create_user("boss", is_staff=True))
params = {"prompt": "a race", "checkpoint": checkpoint, "width": 256, "height": 256, "steps": 2,
          "guidance_scale": 7, "scheduler": "Euler a", "seed": 1, "num_images": 1, "team": "racers"}
start = threading.Barrier(20)

def submit(i):
    start.wait()
    try:
        return str(job_submit(user=members[i % 2], params=params).pk)
    except Refused as refusal:
        return refusal.code
    finally:
        connection.close()

with ThreadPoolExecutor(20) as pool:
    results = list(pool.map(submit, range(20)))
pool = CreditAccount.objects.get(team=team)
print(json.dumps({"results": results, "pool": pool.balance, "ledger": sum(pool.entries.values_list("amount", flat=True)),
                  "jobs": Job.objects.filter(team=team).count(), "charges": pool.entries.filter(kind="charge").count(),
                  "own_charges": CreditAccount.objects.filter(user__in=members, entries__kind="charge").count()}))
"""


def test_two_members_racing_on_a_team_pool_of_5_credits_get_exactly_5_jobs(production):
    """The team's pool is locked as a user's balance is: no overshoot, and no member's own credits touched."""
    outcome = production.script(TEAM_RACE)
    refused = [r for r in outcome["results"] if r == "insufficient_credits"]
    assert (len(outcome["results"]) - len(refused), len(refused)) == (5, 15)
    assert outcome["jobs"] == outcome["charges"] == 5 and outcome["pool"] == 0 == outcome["ledger"]
    assert outcome["own_charges"] == 0
