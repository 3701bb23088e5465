"""The generation app's models live in its domains; Django registers them from here. Import a
model from its domain's `models` module."""

from generation.accounts.models import Role, StaffAction, Team, TeamInvite, TeamMember, UserSettings
from generation.credits.models import CreditAccount, CreditEntry
from generation.jobs.models import Job, PromptStyle
from generation.library.models import AddOn, Checkpoint, Vae
from generation.provenance.models import AuditChain, AuditImage, BlockRule, ImageFingerprint, PromptAudit

__all__ = ["AddOn", "AuditChain", "AuditImage", "BlockRule", "Checkpoint", "CreditAccount", "CreditEntry",
           "ImageFingerprint", "Job", "PromptAudit", "PromptStyle", "Role", "StaffAction", "Team",
           "TeamInvite", "TeamMember", "UserSettings", "Vae"]
