"""Every staff power leaves a row here."""

from generation.accounts.models import StaffAction, StaffEvent


def staff_action(*, staff, event: StaffEvent, target: str, details: str = "") -> StaffAction:
    """Record what a member of staff did to a user, credits, an image or the library."""
    return StaffAction.objects.create(staff=staff, staff_name=staff.get_username() if staff else "system",
                                      action=StaffEvent(event), target=target[:200], details=details)
