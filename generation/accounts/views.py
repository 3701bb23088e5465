"""The teams pages: one's teams and which pays for new jobs, a team's members, pool, ledger and
invitations, its gallery, and joining by a link; and staff's overview of roles and teams."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required, permission_required
from django.core.validators import validate_email
from django.db.models import Count
from django.forms import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from gallery.selectors import gallery_page
from generation.accounts import teams
from generation.accounts.models import Role, Team, TeamInvite, TeamMember, UserSettings


@login_required
def team_list(request):
    chosen = teams.paying_team(request.user, None)
    if request.method == "POST":
        slug = request.POST.get("team", "")
        team = teams.teams_of(request.user).filter(slug=slug).first()
        if slug != teams.OWN_CREDITS and team is None:
            raise Http404
        UserSettings.objects.update_or_create(user=request.user, defaults={"team": team})
        messages.success(request, f"New jobs are paid by the team {team.name}." if team else "New jobs spend your own credits.")
        return redirect("teams")
    return render(request, "teams.html", {"teams": teams.teams_of(request.user), "chosen": chosen})


def _member_team(request, slug) -> tuple[Team, str]:
    """The team and the user's role in it; a 404 for anyone not in it."""
    team = get_object_or_404(Team, slug=slug)
    role = teams.team_role(request.user, team)
    if role is None:
        raise Http404
    return team, role


@login_required
def team_page(request, slug):
    team, role = _member_team(request, slug)
    pool = team.credits if hasattr(team, "credits") else None
    return render(request, "team.html", {
        "team": team, "is_owner": role == TeamMember.OWNER, "balance_now": pool.balance if pool else 0,
        "members": team.members.select_related("user").order_by("-role", "user__username"),
        "entries": pool.entries.select_related("job__user")[:50] if pool else [],
        "join_url": request.build_absolute_uri(reverse("team-join", args=[team.invite_token])) if team.invite_token else "",
        "invites": team.invites.filter(accepted_at__isnull=True).order_by("-created_at")[:20],
    })


@login_required
def team_gallery(request, slug):
    team, _ = _member_team(request, slug)
    query = request.GET.get("q", "").strip()
    page = gallery_page(team=team, query=query, before=request.GET.get("before"), after=request.GET.get("after"))
    return render(request, "gallery.html", {"page": page, "query": query, "team": team})


def _owner_change(request, slug, change) -> object:
    team, _ = _member_team(request, slug)
    try:
        change(team)
    except teams.TeamRefused as refusal:
        messages.error(request, str(refusal))
    return redirect("team", slug=team.slug)


@login_required
@require_POST
def team_link(request, slug):
    def renew(team):
        teams.invite_link_renew(actor=request.user, team=team)
        messages.success(request, "A new join link: the old one no longer works.")
    return _owner_change(request, slug, renew)


@login_required
@require_POST
def team_invite(request, slug):
    def invite(team):
        email = request.POST.get("email", "").strip()
        try:
            validate_email(email)
        except ValidationError:
            raise teams.TeamRefused("E-mail: enter an address such as name@example.org.") from None
        teams.invite_email(actor=request.user, team=team, email=email,
                           join_url=lambda token: request.build_absolute_uri(reverse("team-join", args=[token])))
        messages.success(request, f"Invitation sent to {email}.")
    return _owner_change(request, slug, invite)


@login_required
@require_POST
def team_remove(request, slug, user_id):
    def remove(team):
        member = get_object_or_404(get_user_model(), pk=user_id)
        teams.member_remove(actor=request.user, team=team, user=member)
        messages.success(request, f"{member.get_username()} is no longer in the team; their own images stay theirs.")
    return _owner_change(request, slug, remove)


@login_required
@require_POST
def team_leave(request, slug):
    team, _ = _member_team(request, slug)
    try:
        teams.team_leave(user=request.user, team=team)
    except teams.TeamRefused as refusal:
        messages.error(request, str(refusal))
        return redirect("team", slug=team.slug)
    messages.success(request, f"You left the team {team.name}. Its images stay with the team.")
    return redirect("teams")


@login_required
def team_join(request, token):
    """A join link: the page says which team, the button joins."""
    if request.method == "POST":
        try:
            team = teams.team_join(user=request.user, token=token)
        except teams.TeamRefused as refusal:
            return render(request, "team_join.html", {"error": str(refusal)}, status=403)
        messages.success(request, f"You joined the team {team.name}.")
        return redirect("team", slug=team.slug)
    found = Team.objects.filter(invite_token=token).first() if token else None
    invite = None if found else TeamInvite.objects.filter(token=token, accepted_at__isnull=True).first()
    team = found or (invite.team if invite else None)
    if team is None:
        return render(request, "team_join.html", {"error": "This invitation link is not valid any more; "
                                                            "ask the team's owner for a new one."}, status=404)
    return render(request, "team_join.html", {"team": team})


@staff_member_required
@permission_required(["generation.view_role", "generation.view_team"], raise_exception=True)
def staff_roles(request):
    """Staff: every role with its limits and members, every team with its members and pool (changes: the admin)."""
    roles = Role.objects.select_related("group").prefetch_related("checkpoints").annotate(
        people=Count("group__user")).order_by("group__name")
    return render(request, "staff_roles.html", {"roles": roles, "teams": Team.objects.select_related("credits").annotate(
        people=Count("members")).order_by("name")})
