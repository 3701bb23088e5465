"""Teams: who is in one, joining by link or e-mail invitation, leaving and removal, and which
team (if any) pays for a job. Every change leaves a StaffAction row naming who made it."""

import re
import secrets

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from generation.accounts.models import StaffEvent, Team, TeamInvite, TeamMember, UserSettings
from generation.accounts.staff import staff_action

OWN_CREDITS = "own"  # a job's `team` param for "my own credits and gallery"
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}")  # (anything else is no team's, and never reaches the database)


class TeamRefused(Exception):
    """A team change that can't be made, said for the person who asked."""


def teams_of(user):
    return Team.objects.filter(members__user=user).order_by("name") if user.is_authenticated else Team.objects.none()


def team_role(user, team) -> str | None:
    """"owner", "member", or None for someone not in it."""
    return TeamMember.objects.filter(team=team, user=user).values_list("role", flat=True).first()


def paying_team(user, requested: str | None) -> Team | None:
    """The team a job is made for: the one named by `requested` (its slug; OWN_CREDITS: none), or
    the user's chosen one while they are still in it. Raises ValueError for a team they aren't in."""
    if requested == OWN_CREDITS:
        return None
    if requested:
        team = teams_of(user).filter(slug=requested).first() if SLUG.fullmatch(requested) else None
        if team is None:
            raise ValueError(f"You are not a member of a team {requested!r}; choose one of yours or "
                             f"{OWN_CREDITS!r} for your own credits.")
        return team
    chosen = UserSettings.objects.filter(user=user).values_list("team", flat=True).first()
    return teams_of(user).filter(pk=chosen).first() if chosen else None


def _record(actor, event: StaffEvent, team: Team, details: str) -> None:
    staff_action(staff=actor, event=event, target=f"team {team.name}", details=details)


def invite_link_renew(*, actor, team: Team) -> str:
    """A new join link for the team (the old one stops working)."""
    _owner_only(actor, team)
    team.invite_token = secrets.token_urlsafe(32)
    team.save(update_fields=["invite_token"])
    _record(actor, StaffEvent.TEAM_INVITE, team, "a new join link")
    return team.invite_token


def invite_email(*, actor, team: Team, email: str, join_url) -> TeamInvite:
    """Invite one address: whoever signs in with it and follows the mailed link joins. `join_url`
    makes the absolute link from a token."""
    _owner_only(actor, team)
    invite = TeamInvite.objects.create(team=team, email=email.strip().lower(), token=secrets.token_urlsafe(32),
                                       invited_by=actor)
    send_mail(f"You are invited to the team {team.name}",
              f"{actor.get_username()} invites you to the team {team.name}. Sign in and open this link to join:\n\n"
              f"{join_url(invite.token)}\n", None, [invite.email])
    _record(actor, StaffEvent.TEAM_INVITE, team, f"invited {invite.email}")
    return invite


def team_join(*, user, token: str) -> Team:
    """Join by a team's link or an e-mail invitation meant for this user's address."""
    token = (token or "").strip()
    team = Team.objects.filter(invite_token=token).first() if token else None
    invite = None if team or not token else TeamInvite.objects.filter(token=token, accepted_at__isnull=True).first()
    if invite is not None:
        if invite.email != (user.email or "").lower():
            raise TeamRefused("This invitation was sent to another e-mail address.")
        team = invite.team
    if team is None:
        raise TeamRefused("This invitation link is not valid any more; ask the team's owner for a new one.")
    with transaction.atomic():
        _join(user, team, TeamMember.MEMBER)
        if invite is not None:
            TeamInvite.objects.filter(pk=invite.pk).update(accepted_at=timezone.now())
    return team


def _join(user, team: Team, role: str) -> bool:
    """Make `user` a member (no change for one already in); their first team pays for new jobs."""
    try:
        with transaction.atomic():
            TeamMember.objects.create(team=team, user=user, role=role)
    except IntegrityError:
        return False
    settings_row, _ = UserSettings.objects.get_or_create(user=user)
    if settings_row.team_id is None:
        settings_row.team = team
        settings_row.save(update_fields=["team"])
    _record(user, StaffEvent.TEAM_JOIN, team, f"{user.get_username()} joined as {role}")
    return True


def teams_sync(*, user, names: set[str]) -> None:
    """Membership as the identity provider says (OIDC group claims): join the named teams that exist,
    leave the others it no longer names. Only teams marked `from_sign_in` are touched."""
    for team in Team.objects.filter(name__in=names, from_sign_in=True):
        _join(user, team, TeamMember.MEMBER)
    for member in TeamMember.objects.filter(user=user, role=TeamMember.MEMBER, team__from_sign_in=True).exclude(
            team__name__in=names).select_related("team"):
        _leave(user, member, by=None)


@transaction.atomic
def team_leave(*, user, team: Team) -> None:
    member = TeamMember.objects.select_for_update().filter(team=team, user=user).first()
    if member is None:
        raise TeamRefused("You are not in this team.")
    _leave(user, member, by=user)


@transaction.atomic
def member_remove(*, actor, team: Team, user) -> None:
    """An owner removes someone; they keep their own images and lose the team's."""
    _owner_only(actor, team)
    member = TeamMember.objects.select_for_update().filter(team=team, user=user).first()
    if member is None:
        raise TeamRefused("They are not in this team.")
    _leave(user, member, by=actor)


def _leave(user, member: TeamMember, *, by) -> None:
    team = member.team
    if member.role == TeamMember.OWNER and not TeamMember.objects.filter(
            team=team, role=TeamMember.OWNER).exclude(pk=member.pk).exists():
        raise TeamRefused("A team needs an owner: make someone else owner first.")
    member.delete()
    UserSettings.objects.filter(user=user, team=team).update(team=None)
    what = f"{user.get_username()} left" if by == user else f"{user.get_username()} removed" + (
        "" if by else " (no longer in the identity provider's group)")
    _record(by, StaffEvent.TEAM_LEAVE, team, what)


def _owner_only(actor, team: Team) -> None:
    if team_role(actor, team) != TeamMember.OWNER and not actor.has_perm("generation.change_team"):
        raise TeamRefused("Only the team's owners can do this.")
