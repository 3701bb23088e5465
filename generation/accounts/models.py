"""A user's own settings and the staff actions log."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class UserSettings(models.Model):
    """A user's own defaults (A1111 clients set the checkpoint through /sdapi/v1/options)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="studio_settings")
    default_checkpoint = models.ForeignKey("generation.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL)
    suspended_at = models.DateTimeField(null=True, blank=True, help_text="Set by staff: no more submissions")
    suspended_reason = models.TextField(blank=True)
    show_name_publicly = models.BooleanField(default=False, help_text="The user chose to be named on images they share")
    team = models.ForeignKey("generation.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                             help_text="Whose credits new jobs spend and whose gallery keeps them; empty: the user's own")
    oidc_subject = models.CharField(max_length=255, null=True, blank=True, unique=True,
                                    help_text="Who they are at the sign-in provider (its `sub` claim)")


class StaffEvent(models.TextChoices):
    """What a member of staff did, as the staff actions list shows it. (Rows from before this list
    keep their own words.)"""

    PUBLISH_IMAGE = "publish image", "publish image"
    UNPUBLISH_IMAGE = "unpublish image", "unpublish image"
    DELETE_IMAGE = "delete image", "delete image"
    HIDE_IMAGE = "hide image", "hide image"
    DISMISS_REPORT = "dismiss report", "dismiss report"
    SUSPEND_USER = "suspend user", "suspend user"
    UNSUSPEND_USER = "unsuspend user", "unsuspend user"
    ADJUST_CREDITS = "adjust credits", "adjust credits"
    SCAN_MODELS = "scan models", "scan models"
    SCAN_ADDONS = "scan add-ons", "scan add-ons"
    PUBLISH_ADDON = "publish add-on", "publish add-on"
    UNPUBLISH_ADDON = "unpublish add-on", "unpublish add-on"
    DELETE_ADDON = "delete add-on", "delete add-on"
    CHANGE_ADDON = "change add-on", "change add-on"
    TRACE_IMAGE = "trace image", "trace image"
    ADMIN_ADD = "admin add", "admin add"  # in the admin; the target names the model
    ADMIN_CHANGE = "admin change", "admin change"
    ADMIN_DELETE = "admin delete", "admin delete"
    GRANT_TEAM_CREDITS = "grant team credits", "grant team credits"
    TEAM_INVITE = "team invite", "team invite"  # by a team's owner (not necessarily staff), as are:
    TEAM_JOIN = "team join", "team join"
    TEAM_LEAVE = "team leave", "team leave"
    ROLES_FROM_SIGN_IN = "roles from sign-in", "roles from sign-in"  # the provider's groups changed someone's roles


class StaffAction(models.Model):
    """What staff did to users, credits and images. Appended, never edited."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    staff = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    staff_name = models.CharField(max_length=150)
    action = models.CharField(max_length=40, choices=StaffEvent.choices)
    target = models.CharField(max_length=200)
    details = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("staff actions are append-only")
        super().save(*args, **kwargs)


class Role(models.Model):
    """What the members of a group (the admin's Groups) may use and how much. Someone in several roles
    gets the most any of them allows; someone in none, the site's settings (accounts.roles.allowance)."""

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="role")
    checkpoints = models.ManyToManyField("generation.Checkpoint", blank=True, related_name="+",
                                         help_text="The checkpoints its members may use; none chosen: every one")
    active_jobs = models.PositiveIntegerField(null=True, blank=True, help_text="Jobs queued or running at once; "
                                              "blank: the site's (SDWEB_ACTIVE_JOB_CAP)")
    max_side = models.PositiveIntegerField(null=True, blank=True, help_text="Pixels; blank: the site's (SDWEB_MAX_SIDE)")
    max_steps = models.PositiveIntegerField(null=True, blank=True, help_text="Blank: the site's (SDWEB_MAX_STEPS)")
    max_images = models.PositiveIntegerField(null=True, blank=True, help_text="Images per job; blank: the site's")
    monthly_credits = models.PositiveIntegerField(null=True, blank=True, help_text="Topped up to this once every 30 "
                                                  "days, when the member next shows up; blank: the site's top-up")
    addons = models.ManyToManyField("generation.AddOn", blank=True, related_name="+", limit_choices_to={"owner": None},
                                    help_text="The library's add-ons its members may use; none chosen: every one")
    blocked_addons = models.ManyToManyField("generation.AddOn", blank=True, related_name="+",
                                            help_text="Add-ons its members may never use, uploads included")
    own_addons = models.BooleanField(default=True, help_text="Members may upload LoRAs and embeddings and use "
                                     "their own and those staff published")
    max_upscale = models.FloatField(null=True, blank=True, help_text="The largest hires fix and Upscale factor; "
                                    "blank: only the largest side limits it")
    storage_mb = models.PositiveIntegerField(null=True, blank=True, help_text="Megabytes for a member's gallery and "
                                             "uploaded add-ons (0: no limit); blank: the site's (SDWEB_STORAGE_QUOTA_MB)")

    def __str__(self):
        return self.group.name


class Team(models.Model):
    """People who share a credit pool and a gallery. A job made for the team is paid from its pool and
    its images are the team's: members see them, a member who leaves doesn't (their own stay theirs)."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    invite_token = models.CharField(max_length=43, blank=True, help_text="The join link's secret; empty: no link")
    from_sign_in = models.BooleanField(default=False, help_text="Members follow the sign-in provider's groups: "
                                       "someone whose groups name the team joins it; no longer named, they leave")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.name


class TeamMember(models.Model):
    OWNER, MEMBER = "owner", "member"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships")
    role = models.CharField(max_length=10, choices=[(OWNER, "owner"), (MEMBER, "member")], default=MEMBER)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]


class TeamInvite(models.Model):
    """An invitation sent by e-mail: whoever signs in with that address and follows the link joins."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invites")
    email = models.EmailField()
    token = models.CharField(max_length=43, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    accepted_at = models.DateTimeField(null=True, blank=True)
