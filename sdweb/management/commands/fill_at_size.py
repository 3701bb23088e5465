"""Fill a database as a big studio's looks: many users, their jobs and images (a share of them
public) and a long audit chain, to measure pages and query plans at size. Rows, and one small
picture every image names. The audit rows extend the real chain, so verify_audit still passes."""

import io
import random
import uuid
from datetime import timedelta

from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone
from PIL import Image as PILImage
from PIL import PngImagePlugin

from gallery.models import Image
from generation.credits.models import CreditAccount
from generation.jobs.models import Job
from generation.library.checkpoints import checkpoint_ensure_test_model
from generation.provenance.audit import chain_hash, locked_chain, pseudonym
from generation.provenance.models import AuditChain, AuditImage, PromptAudit

IMAGES_PER_JOB = 4
BATCH = 5000
AUDIT_COLUMNS = ("created_at", "user_id", "username", "subject", "client_ip", "prompt", "negative_prompt", "params", "checkpoint",
                 "decision", "reason", "job_id", "image_ids", "hash", "search_text", "position")


def sample_files() -> tuple[str, str]:
    """One small PNG and thumbnail that every filled image names (the image page reads its PNG)."""
    picture, png, webp = PILImage.new("RGB", (64, 64), "teal"), io.BytesIO(), io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a lighthouse at dusk\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    picture.save(png, "PNG", pnginfo=info)
    picture.save(webp, "WEBP")
    return (default_storage.save("images/size/sample.png", ContentFile(png.getvalue())),
            default_storage.save("thumbnails/size/sample.webp", ContentFile(webp.getvalue())))


class Command(BaseCommand):
    help = "Add users, jobs, images and audit rows in bulk (a load-test database)."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=1000)
        parser.add_argument("--images", type=int, default=100_000)
        parser.add_argument("--audit", type=int, default=1_000_000, help="audit rows in all (one per job included)")
        parser.add_argument("--public", type=float, default=0.1, help="the share of images made public")

    def handle(self, users, images, audit, public, **options):
        rng, now = random.Random(0), timezone.now()
        checkpoint = checkpoint_ensure_test_model()
        tag = uuid.uuid4().hex[:6]  # a second fill adds its own users
        png, thumbnail = sample_files()
        people = User.objects.bulk_create([User(username=f"size-{tag}-{k}", password="!") for k in range(users)])
        CreditAccount.objects.bulk_create([CreditAccount(user=user, balance=1000) for user in people],
                                          ignore_conflicts=True)
        span = timedelta(days=365)  # spread over a year, oldest first
        jobs_count = -(-images // IMAGES_PER_JOB)
        made = 0
        for first in range(0, jobs_count, BATCH):
            jobs, pictures = [], []
            for k in range(first, min(jobs_count, first + BATCH)):
                owner, at = people[k % users], now - span + span * k / jobs_count
                count = min(IMAGES_PER_JOB, images - k * IMAGES_PER_JOB)
                ids = [rng.getrandbits(63) or 1 for _ in range(count)]
                job = Job(user=owner, checkpoint=checkpoint, prompt=f"a lighthouse at dusk, take {k}", width=512,
                          height=512, steps=20, guidance_scale=7.0, scheduler="Euler a", seed=k, num_images=count,
                          image_ids=ids, cost=count, status=Job.SUCCEEDED, started_at=at, finished_at=at)
                jobs.append(job)
                shared = rng.random() < public
                pictures += [Image(id=pk, owner=owner, job=job, index=i, seed=k + i, png=png, thumbnail=thumbnail,
                                   width=512, height=512, is_public=shared,
                                   share_slug=uuid.uuid4().hex if shared else None)
                             for i, pk in enumerate(ids)]
            with transaction.atomic():
                Job.objects.bulk_create(jobs)
                Image.objects.bulk_create(pictures)
                # auto_now_add stamped them now: dated as made over the year
                made_at = Job.objects.filter(pk=OuterRef("job_id")).values("started_at")
                Job.objects.filter(pk__in=[job.pk for job in jobs]).update(created_at=F("started_at"))
                Image.objects.filter(job__in=jobs).update(created_at=Subquery(made_at))
            made += len(pictures)
            self._audit(jobs, rng)
        self._audit_more(max(0, audit - jobs_count), people, now - span, span, rng)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")  # after a bulk load, the statistics the planner reads
        self.stdout.write(f"added {users} users, {jobs_count} jobs, {made} images and {max(audit, jobs_count)} "
                          "audit rows")

    def _audit(self, jobs, rng):
        rows = []
        for job in jobs:
            address = f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"
            rows.append(dict(created_at=job.started_at, user_id=job.user_id, username=job.user.username,
                             subject=pseudonym(job.user_id), client_ip=address, prompt=job.prompt, negative_prompt="",
                             params={"steps": 20, "guidance_scale": 7.0}, checkpoint="sdweb-test-tiny",
                             decision=PromptAudit.ACCEPTED, reason="", job_id=job.pk, image_ids=job.image_ids))
        self._append(rows)

    def _audit_more(self, count, people, start, span, rng):
        for first in range(0, count, BATCH):
            rows = []
            for k in range(first, min(count, first + BATCH)):
                user = people[k % len(people)]
                refused = rng.random() < 0.05
                rows.append(dict(created_at=start + span * k / count, user_id=user.pk, username=user.username,
                                 subject=pseudonym(user.pk), client_ip="10.1.0.1", prompt=f"a harbour in fog, take {k}",
                                 negative_prompt="blurry", params={"steps": 30}, checkpoint="sdweb-test-tiny",
                                 decision=PromptAudit.REFUSED if refused else PromptAudit.ACCEPTED,
                                 reason="This costs 4 credits and your balance is 0." if refused else "",
                                 job_id=None, image_ids=[]))
            self._append(rows)

    @transaction.atomic
    def _append(self, rows: list[dict]) -> None:
        """Rows at the chain's head, hashed as verify_audit reads them back; COPY on PostgreSQL."""
        chain = locked_chain()
        head, made = chain.head, []
        for position, fields in enumerate(rows, start=chain.length + 1):
            row = PromptAudit(**fields, search_text=fields["prompt"], position=position)
            row.hash = head = chain_hash(head, row)
            made.append(row)
        if connection.vendor == "postgresql":
            import json

            with connection.cursor() as cursor, cursor.cursor.copy(
                    f"COPY generation_promptaudit ({', '.join(AUDIT_COLUMNS)}) FROM STDIN") as copy:
                for row in made:
                    copy.write_row([json.dumps(v) if isinstance(v, (dict, list)) else v
                                    for v in (getattr(row, c) for c in AUDIT_COLUMNS)])
        else:
            PromptAudit.objects.bulk_create(made)
        linked = PromptAudit.objects.filter(job_id__in=[r.job_id for r in made if r.job_id]).values_list("pk", "image_ids")
        AuditImage.objects.bulk_create([AuditImage(image_id=i, audit_id=pk) for pk, ids in linked for i in ids])
        AuditChain.objects.filter(pk=1).update(head=head, length=chain.length + len(made))
