"""The sdweb API, /api/v1/: thin views over the same services as the studio's pages."""

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, parsers, permissions, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from generation.credits.ledger import quote_cost
from generation.credits.models import CreditAccount
from generation.engine.request import GenerationRequest
from generation.engine.schedulers import SCHEDULERS
from generation.jobs.models import Job
from generation.jobs.presenters import refusal_status
from generation.jobs.queue import job_cancel
from generation.jobs.submit import Refused, job_submit
from generation.jobs.validation import RefusalCode, settings_problems
from generation.library.models import AddOn, Vae
from generation.library.selectors import addons_for, checkpoints_for, default_checkpoint
from generation.provenance.audit import audit_refused
from generation.provenance.trace import trace_image, verify_image
from generation.serializers import (
    AddOnSerializer,
    CheckpointSerializer,
    CreditEntrySerializer,
    JobCreateSerializer,
    JobSerializer,
    QuoteSerializer,
    VaeSerializer,
)
from sdweb.shared.throttle import client_ip, over_limit


class JobList(generics.ListCreateAPIView):
    """Your jobs, newest first; POST submits a new one (charged at once, refunded if it fails)."""

    def get_serializer_class(self):
        return JobCreateSerializer if self.request.method == "POST" else JobSerializer

    @extend_schema(parameters=[
        OpenApiParameter("status", str, enum=[s for s, _ in Job.STATUSES], description="Only jobs in this status."),
        OpenApiParameter("created_after", str, description="ISO date-time: only jobs made after it."),
        OpenApiParameter("created_before", str, description="ISO date-time: only jobs made before it."),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        jobs = Job.objects.filter(user=self.request.user).select_related("checkpoint", "refiner", "vae") \
            .prefetch_related("images").defer("preview")  # the last live preview: the list doesn't show it
        query = self.request.query_params
        if query.get("status"):
            jobs = jobs.filter(status=query["status"])
        for param, lookup in (("created_after", "created_at__gt"), ("created_before", "created_at__lt")):
            if query.get(param):
                value = serializers.DateTimeField().run_validation(query[param])
                jobs = jobs.filter(**{lookup: value})
        return jobs

    @extend_schema(
        request=JobCreateSerializer, responses={201: JobSerializer, 200: JobSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER,
                                     description="Retrying with the same key returns the same job, charged once.")],
    )
    def post(self, request, *args, **kwargs):
        form = JobCreateSerializer(data=request.data)
        if not form.is_valid():
            audit_refused(user=request.user, client_ip=client_ip(request), data=request.data, errors=form.errors)
            sent = request.data if isinstance(request.data, dict) else {}
            others = settings_problems({k: v for k, v in sent.items() if k not in form.errors})
            raise ValidationError({**{field: [why] for field, why in others.items()}, **form.errors})
        params = dict(form.validated_data)
        checkpoint = params.setdefault("checkpoint", default_checkpoint(request.user))
        params.setdefault("steps", checkpoint.default_steps if checkpoint is not None else 20)
        params.setdefault("guidance_scale", checkpoint.guidance if checkpoint is not None else 7.0)
        if checkpoint is not None and "init_image" not in params:  # img2img: the starting image's size
            params.setdefault("width", checkpoint.default_width)
            params.setdefault("height", checkpoint.default_height)
        key = request.headers.get("Idempotency-Key")
        try:
            job = job_submit(user=request.user, params=params, client_ip=client_ip(request), idempotency_key=key)
        except Refused as refusal:
            if refusal.field and refusal.code != RefusalCode.ROLE_LIMIT:  # with every other setting's problem at once
                raise ValidationError({**{field: [why] for field, why in settings_problems(params).items()},
                                       refusal.field: [str(refusal)]})
            return Response({"detail": str(refusal), "code": refusal.code, **({"field": refusal.field} if refusal.field
                                                                                 else {})}, status=refusal_status(refusal))
        return Response(JobSerializer(job, context={"request": request}).data,
                        status=status.HTTP_200_OK if job.replayed else status.HTTP_201_CREATED)


class JobDetail(generics.RetrieveAPIView):
    """One of your jobs, with its progress and, when done, its images."""

    serializer_class = JobSerializer

    def get_queryset(self):
        return Job.objects.filter(user=self.request.user).select_related("checkpoint")


class JobCancel(APIView):
    """Cancel your job: a queued one at once (refunded), a running one within a step."""

    @extend_schema(request=None, responses={200: JobSerializer})
    def post(self, request, pk):
        get_object_or_404(Job, pk=pk, user=request.user)
        return Response(JobSerializer(job_cancel(user=request.user, job_id=pk), context={"request": request}).data)


class CheckpointList(generics.ListAPIView):
    """The checkpoints you can generate with."""

    serializer_class = CheckpointSerializer
    pagination_class = None

    def get_queryset(self):
        return checkpoints_for(self.request.user)


class AddOnList(generics.ListAPIView):
    """The LoRAs, embeddings and ControlNets you can use: the library, published uploads and yours."""

    serializer_class = AddOnSerializer
    pagination_class = None

    @extend_schema(parameters=[OpenApiParameter("kind", str, enum=[k for k, _ in AddOn.KINDS],
                                                description="Only this kind.")])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        kind = self.request.query_params.get("kind")
        return addons_for(self.request.user, kind=kind if kind in dict(AddOn.KINDS) else None)


class VaeList(generics.ListAPIView):
    """The VAE files a job may decode with (`vae`)."""

    serializer_class = VaeSerializer
    pagination_class = None
    queryset = Vae.objects.filter(enabled=True)


class SchedulerList(APIView):
    """The schedulers, with the names A1111 writes for them."""

    @extend_schema(responses=inline_serializer("Scheduler", {
        "name": serializers.CharField(help_text="Use as `scheduler` when submitting."),
        "sampler": serializers.CharField(help_text="A1111's sampler name for it."),
        "schedule_type": serializers.CharField(help_text="A1111's schedule type for it."),
    }, many=True))
    def get(self, request):
        return Response([{"name": s.name, "sampler": s.sampler, "schedule_type": s.schedule_type}
                         for s in SCHEDULERS.values()])


class Credits(APIView):
    """Your balance."""

    @extend_schema(responses=inline_serializer("Balance", {"balance": serializers.IntegerField(help_text="Credits.")}))
    def get(self, request):
        account, _ = CreditAccount.objects.get_or_create(user=request.user)
        return Response({"balance": account.balance})


class CreditLedger(generics.ListAPIView):
    """Every change of your balance, newest first."""

    serializer_class = CreditEntrySerializer

    def get_queryset(self):
        return CreditAccount.objects.get_or_create(user=self.request.user)[0].entries.all()


class Quote(APIView):
    """What a job with these settings would cost, in credits."""

    @extend_schema(parameters=[QuoteSerializer], responses=inline_serializer("Quote", {
        "cost": serializers.IntegerField(help_text="Credits these settings cost."),
        "balance": serializers.IntegerField(help_text="Your credits now.")}))
    def get(self, request):
        form = QuoteSerializer(data=request.query_params)
        form.is_valid(raise_exception=True)
        fields = dict(form.validated_data)
        from_image, num_images, units = fields.pop("from_image"), fields.pop("num_images"), fields.pop("controlnet_units")
        passes = GenerationRequest(prompt="", model="", **fields).passes(from_image=from_image)
        account, _ = CreditAccount.objects.get_or_create(user=request.user)
        return Response({"cost": quote_cost(width=0, height=0, steps=0, num_images=num_images, passes=passes,
                                            controlnet_units=units), "balance": account.balance})




class CanTrace(permissions.BasePermission):
    def has_permission(self, request, view):
        return bool(request.user and request.user.is_staff and request.user.has_perm("generation.trace_image"))


class Trace(APIView):
    """Staff with the trace_image permission: upload an image (multipart field `image`); its
    watermark gives the image id, or failing that the nearest images by perceptual hash, or its
    PNG metadata; the audit log gives the job, owner, prompt, time and checkpoint. Each trace is
    recorded as a staff action."""

    permission_classes = [CanTrace]
    parser_classes = [parsers.MultiPartParser]

    @extend_schema(request=inline_serializer("TraceUpload", {"image": serializers.ImageField()}),
                   responses=inline_serializer("TraceResult", {
                       "found": serializers.BooleanField(help_text="Whether an audit row made this image."),
                       "method": serializers.CharField(allow_null=True,
                                                       help_text="watermark, similarity, metadata or null."),
                       "confidence": serializers.FloatField(allow_null=True, help_text=(
                           "0-1: the share of the watermark's coded cells, or of the 128 hash bits, that agree.")),
                       "distance": serializers.IntegerField(allow_null=True, help_text=(
                           "similarity: bits that differ (of 128; a match is within 20).")),
                       "candidates": serializers.ListField(child=serializers.DictField(), help_text=(
                           "similarity: every image within the threshold, nearest first (id, distance, how, "
                           "job, owner, prompt, time).")),
                       "image_id": serializers.CharField(allow_null=True, help_text="16 hex digits."),
                       "message": serializers.CharField(help_text="What was found, in words."),
                       "job_id": serializers.CharField(required=False, help_text="The job that made it."),
                       "owner": serializers.CharField(required=False, help_text="Username, or a pseudonym."),
                       "prompt": serializers.CharField(required=False, help_text="The prompt, as audited."),
                       "created_at": serializers.CharField(required=False, help_text="When it was submitted."),
                       "checkpoint": serializers.CharField(required=False, help_text="The checkpoint's name."),
                   }))
    def post(self, request):
        try:
            return Response(trace_image(request.FILES.get("image"), staff=request.user))
        except ValueError as error:
            field, _, message = str(error).partition(": ")
            raise ValidationError({field: [message]})


class Verify(APIView):
    """Anyone, no account: was this image made here? Upload it (multipart field `image`). The
    answer says when and with which checkpoint, how sure (the watermark, or likeness alone), its
    C2PA credentials, and who made it only for an image its owner shared; never a prompt.
    Throttled per address (SDWEB_VERIFY_PER_WINDOW)."""

    authentication_classes = []
    permission_classes = [permissions.AllowAny]
    parser_classes = [parsers.MultiPartParser]

    @extend_schema(request=inline_serializer("VerifyUpload", {"image": serializers.ImageField()}),
                   responses=inline_serializer("VerifyResult", {
                       "made_here": serializers.BooleanField(help_text="Whether this studio made it."),
                       "certainty": serializers.CharField(allow_null=True, help_text=(
                           "certain (its watermark, matching the picture) or probable (likeness alone).")),
                       "made_at": serializers.CharField(allow_null=True, help_text="The day it was made."),
                       "checkpoint": serializers.CharField(allow_null=True, help_text="The checkpoint's name."),
                       "distance": serializers.IntegerField(allow_null=True, help_text="Bits of 128 that differ."),
                       "shared": serializers.DictField(allow_null=True, help_text=(
                           "Only for an image its owner made public: by (their name if they chose to be named) "
                           "and share_slug (its page: /s/<slug>/).")),
                       "c2pa": serializers.DictField(help_text="The file's C2PA credentials: present, issuer, "
                                                     "ai_generated, trusted, problems."),
                       "message": serializers.CharField(help_text="The answer, in words."),
                   }))
    def post(self, request):
        if over_limit("verify-ip", client_ip(request), settings.SDWEB["VERIFY_PER_WINDOW"]):
            return Response({"detail": "Too many checks from this address; try again later."}, status=429,
                            headers={"Retry-After": str(settings.SDWEB["AUTH_WINDOW_SECONDS"])})
        try:
            return Response(verify_image(request.FILES.get("image")))
        except ValueError as error:
            field, _, message = str(error).partition(": ")
            raise ValidationError({field: [message]})

