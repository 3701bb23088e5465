"""Roles and teams in the admin: a role is made with its group (and its members), a team with its
members and its pool of credits."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from generation.accounts.models import Role, Team, TeamMember
from generation.credits.ledger import team_credits_grant


class RoleForm(forms.ModelForm):
    name = forms.CharField(max_length=150, help_text="Its members are the group of this name: add people here, on "
                           "their user page, or through the sign-in provider's groups")
    members = forms.ModelMultipleChoiceField(get_user_model().objects.all(), required=False,
                                             widget=FilteredSelectMultiple("members", is_stacked=False))

    class Meta:
        model = Role
        exclude = ("group",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial |= {"name": self.instance.group.name, "members": list(self.instance.group.user_set.all())}

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if Group.objects.filter(name=name).exclude(role=self.instance.pk if self.instance.pk else None).filter(
                role__isnull=False).exists():
            raise forms.ValidationError("Another role has this name.")
        return name


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    """What a group's members may use and how much: a role is made with its group."""

    form = RoleForm
    list_display = ("group", "active_jobs", "max_side", "max_steps", "max_images", "monthly_credits", "storage_mb")
    filter_horizontal = ("checkpoints", "addons", "blocked_addons")

    def save_model(self, request, obj, form, change):
        name = form.cleaned_data["name"]
        if change:
            Group.objects.filter(pk=obj.group_id).update(name=name)
        else:
            obj.group = Group.objects.get_or_create(name=name)[0]
        super().save_model(request, obj, form, change)
        obj.group.user_set.set(form.cleaned_data["members"])

class TeamMemberInline(admin.TabularInline):
    model = TeamMember
    fields = ("user", "role", "joined_at")
    readonly_fields = ("joined_at",)
    raw_id_fields = ("user",)
    extra = 1


class TeamForm(forms.ModelForm):
    grant = forms.IntegerField(required=False, help_text="Credits to add to the team's pool (negative to remove)")
    reason = forms.CharField(required=False, max_length=200, help_text="Why: it goes into the pool's ledger")

    class Meta:
        model = Team
        fields = ("name", "slug", "from_sign_in")

    def clean(self):
        data = super().clean()
        if data.get("grant") and not data.get("reason"):
            self.add_error("reason", "Say why the pool changes; it goes into the ledger.")
        return data


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    """A team's members (owners manage invitations on the team's page) and its pool of credits."""

    form = TeamForm
    list_display = ("name", "slug", "from_sign_in", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [TeamMemberInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if amount := form.cleaned_data.get("grant"):
            team_credits_grant(team=obj, amount=amount, reason=form.cleaned_data["reason"], staff=request.user)
            messages.info(request, f"{amount:+d} credits recorded in the team {obj.name}'s pool.")
