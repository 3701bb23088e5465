from oidc_provider.lib.claims import ScopeClaims


def userinfo(claims, user):
    claims.update(email=user.email, email_verified=True, preferred_username=user.username, name=user.get_full_name())
    return claims


class GroupClaims(ScopeClaims):
    """The `groups` scope: the user's groups, as organisations' providers send them."""

    info_groups = ("Groups", "The groups you are in.")

    def scope_groups(self):
        return {"groups": sorted(self.user.groups.values_list("name", flat=True))}
