"""A user's credit account and its ledger."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class CreditAccount(models.Model):
    """A user's credits, or a team's pool (exactly one of the two)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="credits")
    team = models.OneToOneField("generation.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="credits")
    balance = models.IntegerField(default=0)
    last_topup_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(user__isnull=False, team__isnull=True) | Q(
            user__isnull=True, team__isnull=False), name="user_or_team")]

    def __str__(self):
        return f"{self.user or self.team} ({self.balance})"


class CreditEntry(models.Model):
    """One change of a balance. The balance always equals the sum of its account's entries."""

    GRANT, TOPUP, CHARGE, REFUND, ADJUST = "grant", "topup", "charge", "refund", "adjust"
    KINDS = [(k, k) for k in (GRANT, TOPUP, CHARGE, REFUND, ADJUST)]

    account = models.ForeignKey(CreditAccount, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=10, choices=KINDS)
    amount = models.IntegerField()
    reason = models.CharField(max_length=200)
    job = models.ForeignKey("generation.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="credit_entries")
    staff = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "credit entries"
        # A job is charged once and refunded at most once, whatever retries or races happen.
        constraints = [models.UniqueConstraint(fields=["job", "kind"], condition=Q(kind__in=["charge", "refund"]),
                                               name="one_charge_and_one_refund_per_job")]
