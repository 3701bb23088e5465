"""The pictures a submission starts from (a starting image, a mask, ControlNet images): decoded as
hostile input, digested for the audit, stored by content once the job is accepted, and read back for
the worker and for "use as starting image"."""

import hashlib
import io

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from gallery.models import Image
from generation.jobs.models import Job
from generation.jobs.validation import Refused
from generation.library.models import AddOn
from generation.untrusted_images import Upload, flattened, mask_from, png_bytes, read_image


def input_digests(params: dict) -> dict:
    """The SHA-256 of the starting image and mask as received (gallery images: their file), and
    the gallery image id, for the audit; also for uploads that turn out not to be images."""
    digests = {}
    for field in ("init_image", "mask"):
        value = params.get(field)
        if isinstance(value, (bytes, bytearray)):
            digests[f"{field}_sha256"] = hashlib.sha256(value).hexdigest()
        elif isinstance(value, Upload):
            digests[f"{field}_sha256"] = value.sha256
        elif isinstance(value, Image):
            digests[f"{field}_id"] = value.hex_id
    units = params.get("controlnet")
    if isinstance(units, list) and units:
        digests["controlnet_sha256"] = [_digest(unit.get("image") if isinstance(unit, dict) else None) for unit in units]
    return digests


def _digest(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        return hashlib.sha256(value).hexdigest()
    return value.sha256 if isinstance(value, Upload) else f"image {value.hex_id}" if isinstance(value, Image) else ""


def image_inputs(user, params: dict) -> dict:
    """The starting image (RGB) and mask (L, white = repaint) as the engine takes them, and each
    ControlNet unit's image (an Upload) under "controlnet"."""
    inputs, init, mask = {"controlnet": control_images(user, params.get("controlnet"))}, params.get("init_image"), \
        params.get("mask")
    if init in (None, "", b""):
        if mask not in (None, "", b""):
            raise Refused("A mask needs a starting image (init_image).", field="init_image")
        return inputs
    try:
        upload = _upload(user, init, "init_image")
        inputs["init_image"], inputs["init_image_sha256"] = flattened(upload.image), upload.sha256
        if mask not in (None, "", b""):
            upload = mask if isinstance(mask, Upload) else read_image(mask, field="mask")
            inputs["mask"], inputs["mask_sha256"] = mask_from(upload.image), upload.sha256
    except ValueError as error:
        raise refused(error) from error
    if "mask" in inputs and inputs["mask"].size != inputs["init_image"].size:
        raise Refused(f"The mask is {inputs['mask'].width}x{inputs['mask'].height}; it must be the starting image's "
                      f"size, {inputs['init_image'].width}x{inputs['init_image'].height}.", field="mask")
    if isinstance(params.get("init_image"), Image):
        inputs["init_image_id"] = params["init_image"].id
    return inputs


def control_images(user, units) -> list[Upload]:
    if units in (None, "", []):
        return []
    most = settings.SDWEB["CONTROLNET_MAX_UNITS"]
    if not isinstance(units, list) or not all(isinstance(unit, dict) for unit in units):
        raise Refused("controlnet: a list of units (objects with image, module, model...) is required.",
                      field="controlnet")
    if len(units) > most:
        raise Refused(f"controlnet: {len(units)} units; at most {most} are allowed in one job.", field="controlnet")
    try:
        return [Upload(flattened(u.image), u.sha256) for u in (
            _upload(user, unit.get("image"), f"controlnet[{k}].image") for k, unit in enumerate(units))]
    except ValueError as error:
        raise refused(error) from error


def _upload(user, value, field: str) -> Upload:
    """An image as received (bytes or an Upload) or a gallery image the user may see, read with
    the upload checks; its SHA-256 is of the file received (a gallery image's: its PNG)."""
    if isinstance(value, Upload):
        return value
    if isinstance(value, Image):
        if not value.can_view(user):
            raise ValueError(f"{field}: upload a PNG, JPEG or WebP file, or give the id of an image of yours "
                             "(or a public one)")
        if value.hidden:  # a takedown holds for everything made from the image
            raise ValueError(f"{field}: image {value.hex_id} was hidden by staff and can't be used to make images")
        with default_storage.open(value.png.name, "rb") as file:
            value = file.read()
    return read_image(value, field=field)


def refused(error: ValueError) -> Refused:
    field, _, message = str(error).partition(": ")
    return Refused(message[:1].upper() + message[1:] + ".", field=field)


def job_inputs(job: Job) -> dict:
    """A job's starting image and mask as stored, as submit takes them again (more variants) and
    the engine takes them (PIL images under .image), each with the SHA-256 of the file received."""
    inputs = {}
    for field, mode in (("init_image", "RGB"), ("mask", "L")):
        if getattr(job, field):
            with default_storage.open(getattr(job, field), "rb") as file:
                image = PILImage.open(io.BytesIO(file.read()), formats=["PNG"]).convert(mode)
            inputs[field] = Upload(image=image, sha256=getattr(job, f"{field}_sha256"))
    return inputs


def job_control_units(job: Job) -> list[dict]:
    """A job's ControlNet units as submit takes them again (more variants)."""
    units = []
    for record in job.addons:
        if record["kind"] == AddOn.CONTROLNET:
            with default_storage.open(record["image"], "rb") as file:
                image = PILImage.open(io.BytesIO(file.read()), formats=["PNG"]).convert("RGB")
            units.append({k: v for k, v in record.items() if k not in ("kind", "name", "sha256", "image", "image_sha256")}
                         | {"model": record["name"], "image": Upload(image=image, sha256=record["image_sha256"])})
    return units


def inputs_store(inputs: dict, addons: list[dict]) -> dict:
    """Write the starting image, mask and control images as clean PNGs, each named by what it is
    and the stored file's own SHA-256 (the same picture sent again stores nothing new, and no
    other file can take its name), and give the Job fields (and unit records) that point at them."""
    units = [record for record in addons if record["kind"] == AddOn.CONTROLNET]
    for record, upload in zip(units, inputs["controlnet"]):
        record["image"] = _stored("control", upload.image)
    fields = {field: _stored(field, inputs[field]) for field in ("init_image", "mask") if field in inputs}
    fields |= {f"{field}_sha256": inputs[f"{field}_sha256"] for field in fields}
    return fields | ({"init_image_id": inputs["init_image_id"]} if "init_image_id" in inputs else {})


def _stored(kind: str, image: PILImage.Image) -> str:
    data = png_bytes(image)
    name = f"inputs/{kind}-{hashlib.sha256(data).hexdigest()}.png"
    return name if default_storage.exists(name) else default_storage.save(name, ContentFile(data))
