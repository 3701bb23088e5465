from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics, serializers
from rest_framework.views import APIView

from gallery import services
from gallery.models import Image
from gallery.selectors import parse_image_id, visible_images


class ImageSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="hex_id", read_only=True, help_text="16 hex digits; also the watermark payload.")
    job = serializers.UUIDField(source="job_id", read_only=True, help_text="The job that made it.")
    prompt = serializers.CharField(source="job.prompt", read_only=True, help_text="The prompt that made it.")
    share_url = serializers.SerializerMethodField(help_text="The public page, while the image is public.")
    is_public = serializers.BooleanField(help_text="Whether anyone may see it; PATCH to change.")
    team = serializers.CharField(source="team.slug", read_only=True, allow_null=True,
                                 help_text="The team whose gallery holds it (its members see it); null: yours alone.")

    class Meta:
        model = Image
        fields = ["id", "job", "index", "seed", "width", "height", "prompt", "is_public", "share_url", "team", "created_at"]
        read_only_fields = ["index", "seed", "width", "height", "created_at"]
        extra_kwargs = {
            "index": {"help_text": "Its place in the job's batch."},
            "seed": {"help_text": "The seed that made it."},
            "width": {"help_text": "Pixels."},
            "height": {"help_text": "Pixels."},
            "created_at": {"help_text": "When it was stored."},
        }

    def get_share_url(self, image) -> str | None:
        return f"/s/{image.share_slug}/" if image.is_public else None

    def update(self, image, validated_data):
        try:
            return services.image_set_public(image=image, public=validated_data.get("is_public", image.is_public),
                                             actor=self.context["request"].user)
        except PermissionError as error:
            raise exceptions.PermissionDenied(str(error))


class ImageList(generics.ListAPIView):
    """Your own images and your teams', newest first."""

    serializer_class = ImageSerializer

    @extend_schema(parameters=[
        OpenApiParameter("job", str, description="Only this job's images."),
        OpenApiParameter("public", bool, description="Only public (true) or private (false) images."),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        images = visible_images(self.request.user).select_related("job")
        query = self.request.query_params
        if query.get("job"):
            images = images.filter(job_id=serializers.UUIDField().run_validation(query["job"]))
        if query.get("public") in ("true", "false"):
            images = images.filter(is_public=query["public"] == "true")
        return images


class ImageDetail(generics.RetrieveUpdateDestroyAPIView):
    """One of your images: read it, make it public or private, or delete it with its files."""

    serializer_class = ImageSerializer
    http_method_names = ["get", "patch", "delete"]

    def get_object(self):
        image = generics.get_object_or_404(visible_images(self.request.user).select_related("job"),
                                           pk=parse_image_id(self.kwargs["hex_id"]))
        if self.request.method != "GET" and not image.may(self.request.user, "change"):
            raise exceptions.PermissionDenied("Only its maker and the team's owners can change or delete a team image.")
        return image

    def perform_destroy(self, image):
        services.images_delete(images=[image], actor=self.request.user)


class ImageDownload(APIView):
    """The original PNG, with its A1111 parameters and watermark."""

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request, hex_id):
        image = generics.get_object_or_404(visible_images(request.user), pk=parse_image_id(hex_id))
        return FileResponse(image.png.open("rb"), content_type="image/png", as_attachment=True,
                            filename=f"sdweb-{image.hex_id}.png")
