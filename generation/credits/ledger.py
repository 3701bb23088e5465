"""Credits: integer balances that change only through ledger rows, under a row lock."""

import math
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from generation.accounts.models import StaffEvent
from generation.accounts.roles import allowance
from generation.accounts.staff import staff_action
from generation.credits.models import CreditAccount, CreditEntry


def quote_cost(*, width: int, height: int, steps: int, num_images: int, passes=None, controlnet_units: int = 0) -> int:
    """ceil(images x width x height x steps / SDWEB_COST_UNIT), at least 1 credit; with `passes`
    ((width, height, steps run), as GenerationRequest.passes gives: img2img runs strength x steps,
    hires fix adds its second pass), the sum over them. A ControlNet is about half a UNet: each
    unit adds half of every step's work."""
    pixel_steps = sum(w * h * s for w, h, s in passes) if passes else width * height * steps
    work = num_images * pixel_steps * (2 + controlnet_units) / 2
    return max(1, math.ceil(work / settings.SDWEB["COST_UNIT"]))


def locked_account(user=None, *, team=None) -> CreditAccount:
    """The user's account (or the team's pool), locked until the caller's transaction ends."""
    owner = {"team_id": team.pk} if team is not None else {"user_id": user.pk}  # by id: no stale copy cached
    CreditAccount.objects.get_or_create(**owner)
    return CreditAccount.objects.select_for_update().get(**owner)


@transaction.atomic
def credits_change(*, user=None, team=None, kind: str, amount: int, reason: str, job=None, staff=None) -> CreditEntry:
    """The one way a balance changes (a user's, or a team's pool): locked, with its ledger row in the
    same transaction."""
    account = locked_account(user, team=team)
    entry = CreditEntry.objects.create(account=account, kind=kind, amount=amount, reason=reason, job=job, staff=staff)
    account.balance += amount  # safe: the row is locked until this transaction ends
    account.save(update_fields=["balance"])
    return entry


@transaction.atomic
def credits_grant(*, user, amount: int, reason: str, staff=None) -> CreditEntry:
    if staff:
        staff_action(staff=staff, event=StaffEvent.ADJUST_CREDITS, target=user.get_username(), details=f"{amount:+d}: {reason}")
    return credits_change(user=user, kind=CreditEntry.ADJUST if staff else CreditEntry.GRANT, amount=amount,
                          reason=reason, staff=staff)


@transaction.atomic
def team_credits_grant(*, team, amount: int, reason: str, staff) -> CreditEntry:
    staff_action(staff=staff, event=StaffEvent.GRANT_TEAM_CREDITS, target=f"team {team.name}", details=f"{amount:+d}: {reason}")
    return credits_change(team=team, kind=CreditEntry.ADJUST, amount=amount, reason=reason, staff=staff)


@transaction.atomic
def credits_refund(*, job, amount: int | None = None, reason: str) -> CreditEntry | None:
    """Refund a job once; a second call (a retry, a race) changes nothing."""
    if CreditEntry.objects.filter(job=job, kind=CreditEntry.REFUND).exists():
        return None
    try:
        with transaction.atomic():
            return credits_change(user=job.user, team=job.team, kind=CreditEntry.REFUND,
                                  amount=job.cost if amount is None else amount, reason=reason, job=job)
    except IntegrityError:  # the unique (job, kind) key: someone refunded it first
        return None


def credits_topup_if_due(*, user) -> CreditEntry | None:
    """The periodic top-up (SDWEB_TOPUP_*), or the monthly grant of the user's role (up to it, every
    30 days), applied when the user next shows up. Pages ask on every visit, so the account is read
    first and locked only when a top-up is due."""
    amount, ceiling, hours = settings.SDWEB["TOPUP_AMOUNT"], settings.SDWEB["TOPUP_CEILING"], settings.SDWEB[
        "TOPUP_EVERY_HOURS"]
    if (monthly := allowance(user).monthly_credits) is not None:
        amount, ceiling, hours = monthly, monthly, 30 * 24
    every = timedelta(hours=hours)
    if amount <= 0 or not _topup_due(CreditAccount.objects.filter(user_id=user.pk).first(), ceiling, every):
        return None
    with transaction.atomic():
        account = locked_account(user)
        if not _topup_due(account, ceiling, every):  # another request topped it up first
            return None
        CreditAccount.objects.filter(pk=account.pk).update(last_topup_at=timezone.now())
        return credits_change(user=user, kind=CreditEntry.TOPUP, amount=min(amount, ceiling - account.balance),
                              reason="monthly grant of the role" if monthly is not None else "periodic top-up")


def _topup_due(account: CreditAccount | None, ceiling: int, every: timedelta) -> bool:
    if account is None:
        return True
    return account.balance < ceiling and (account.last_topup_at is None or timezone.now() - account.last_topup_at >= every)
