"""The generation app's models, in three modules: the model registry, jobs and credits, and the
audit. Import them from here."""

from generation.models.audit import (
                                     AppendOnly,
                                     AuditChain,
                                     AuditImage,
                                     BlockRule,
                                     ImageFingerprint,
                                     PromptAudit,
                                     StaffAction,
                                     new_image_id,
)
from generation.models.jobs import (
                                     HIRES_PARAMS,
                                     IMAGE_INPUT_PARAMS,
                                     INPUT_DIGESTS,
                                     CreditAccount,
                                     CreditEntry,
                                     Job,
                                     PromptStyle,
                                     UserSettings,
)
from generation.models.registry import AddOn, Checkpoint, ModelQuerySet, Vae, is_model_name

__all__ = ["AddOn", "AppendOnly", "AuditChain", "AuditImage", "BlockRule", "Checkpoint", "CreditAccount", "CreditEntry",
           "HIRES_PARAMS", "IMAGE_INPUT_PARAMS", "INPUT_DIGESTS", "ImageFingerprint", "Job", "ModelQuerySet",
           "PromptAudit", "PromptStyle", "StaffAction", "UserSettings", "Vae", "is_model_name", "new_image_id"]
