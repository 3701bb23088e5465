from django.db.models import Sum

from generation.models import CreditAccount, CreditEntry, Job


def form_data(checkpoint, **overrides):
    return {"prompt": "a lighthouse at dusk", "negative_prompt": "", "checkpoint": checkpoint.pk, "width": 256,
            "height": 256, "steps": 4, "guidance_scale": 7, "scheduler": "Euler a", "seed": 42, "num_images": 2,
            **overrides}


def params(checkpoint, **overrides):
    return {**form_data(checkpoint, **overrides), "checkpoint": checkpoint}


def assert_ledger_balanced():
    for account in CreditAccount.objects.all():
        assert account.balance == (CreditEntry.objects.filter(account=account).aggregate(s=Sum("amount"))["s"] or 0)


def refunds(job: Job) -> int:
    return CreditEntry.objects.filter(job=job, kind=CreditEntry.REFUND).count()
