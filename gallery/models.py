from django.conf import settings
from django.db import models


class Image(models.Model):
    """A stored image. Its id was allocated at submit and is its watermark payload."""

    id = models.BigIntegerField(primary_key=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    job = models.ForeignKey("generation.Job", on_delete=models.CASCADE, related_name="images")
    team = models.ForeignKey("generation.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="images",
                             help_text="A team image: in the team's gallery, for its members only (a deleted team's "
                                       "images go back to their makers)")
    index = models.PositiveIntegerField(help_text="Position in the job's batch")
    seed = models.BigIntegerField()
    png = models.FileField(upload_to="images/")
    thumbnail = models.FileField(upload_to="thumbnails/")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    stored_bytes = models.PositiveBigIntegerField(default=0, help_text="Its PNG and thumbnail: what it takes of "
                                                  "the owner's storage quota")
    is_public = models.BooleanField(default=False, db_index=True)
    share_slug = models.CharField(max_length=32, null=True, blank=True, unique=True,
                                  help_text="Set while public; a new one each time, so old links stay dead")
    hidden = models.BooleanField(default=False, help_text="Hidden by staff: private, and can't be made public again")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "index"]
        indexes = [  # the galleries' order (selectors.gallery_page), for one owner and for Explore
            models.Index(fields=["owner", "-created_at", "index", "id"], name="image_owner_newest"),
            models.Index(fields=["team", "-created_at", "index", "id"], condition=models.Q(team__isnull=False),
                         name="image_team_newest"),
            models.Index(fields=["-created_at", "index", "id"], condition=models.Q(is_public=True), name="image_public_newest"),
        ]

    def __str__(self):
        return f"image {self.id:016x}"

    @property
    def hex_id(self) -> str:
        return f"{self.id:016x}"

    @property
    def watermark_payload(self) -> bytes:
        return self.id.to_bytes(8, "big")

    def can_view(self, user) -> bool:
        return self.is_public or self.may(user, "view")

    def may(self, user, action: str) -> bool:
        """The owner may do anything with a private image; with a team image, its maker while still a
        member, any member may view it and the team's owners do anything. Staff only what their Django
        permission (gallery.view_image, change_image, delete_image) allows."""
        if not user.is_authenticated:
            return False
        if user.is_staff and user.has_perm(f"gallery.{action}_image"):
            return True
        if self.team_id is None:
            return user.pk == self.owner_id
        role = user.team_memberships.filter(team_id=self.team_id).values_list("role", flat=True).first()
        return role is not None and (action == "view" or user.pk == self.owner_id or role == "owner")


class Report(models.Model):
    """Someone reported a public image; staff resolve it."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    reason = models.TextField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=40, blank=True)

    class Meta:
        ordering = [models.F("resolved_at").asc(nulls_first=True), "-created_at"]  # open reports first
