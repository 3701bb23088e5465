"""Trace an image back to its job: the watermark's payload is the image id, and the audit row
that made the image is found by it, also after the image, the job or the account is gone."""

from django.conf import settings
from PIL import Image as PILImage

from gallery.models import Image
from generation.engine.metadata import read_png_marking, read_png_parameters
from generation.engine.watermark import read_watermark
from generation.models import AuditImage
from generation.provenance import read_credentials
from generation.services.audit import staff_action
from generation.uploads import open_image


def trace_image(upload, *, staff) -> dict:
    """What sdweb knows about the uploaded image, for `staff` (who needs generation.trace_image;
    each trace is a staff action); ValueError names the field for a bad upload."""
    result = _trace(upload)
    staff_action(staff=staff, action="trace image", target=result["image_id"] or "(no id found)",
                 details=result["message"])
    return result


def _trace(upload) -> dict:
    if upload is None:
        raise ValueError("image: upload a PNG, JPEG or WebP file")
    data = upload.read(settings.SDWEB["UPLOAD_MAX_BYTES"] + 1)
    picture = open_image(data, field="image")
    credentials = read_credentials(data, PILImage.MIME.get(picture.format, "image/png"))
    payload = read_watermark(picture.convert("RGB"))
    marking = read_png_marking(picture)
    found = {"watermark": payload.hex() if payload else None, "metadata": marking["image_id"] or None,
             "ai_generated_marking": marking["ai_generated"], "parameters": read_png_parameters(picture),
             "c2pa": credentials}
    method = "watermark" if payload else "metadata" if marking["image_id"] else None
    result = {"found": False, "method": method, "image_id": found[method] if method else None, "read": found}
    if method is None:
        result["message"] = "No watermark could be read and the file carries no sdweb metadata."
        return result
    row = AuditImage.objects.select_related("audit").filter(image_id=int(result["image_id"], 16)).first()
    if row is None:
        result["message"] = (f"The {method} reads {result['image_id']}, but no audit row holds that image id "
                             "(not made here, or pruned).")
        return result
    audit = row.audit
    result.update(found=True, message="Watermark read." if method == "watermark" else
                  "No watermark could be read; found through the PNG metadata, which anyone can edit.",
                  job_id=str(audit.job_id), audit_id=audit.pk, owner=audit.username, owner_id=audit.user_id,
                  account_exists=audit.user_id is not None, prompt=audit.prompt, negative_prompt=audit.negative_prompt,
                  created_at=audit.created_at.isoformat(), checkpoint=audit.checkpoint, params=audit.params,
                  image_exists=Image.objects.filter(pk=row.image_id).exists())
    return result
