"""Trace an image back to its job. Three ways in, most trustworthy first: the watermark (its
payload is the image id), the similarity index (perceptual hashes of every image handed out) and
the PNG metadata (which anyone can edit). The audit row that made the image is found by the id,
also after the image, the job or the account is gone."""

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from PIL import Image as PILImage

from gallery.models import Image
from generation.accounts.models import StaffEvent
from generation.accounts.staff import staff_action
from generation.engine.fingerprint import ASPECT_TOLERANCE, MATCH_DISTANCE, Fingerprint, Hypothesis, closest, hypotheses, nearest
from generation.engine.metadata import read_png_marking, read_png_parameters
from generation.engine.watermark import watermark_reading
from generation.provenance.c2pa import read_credentials
from generation.provenance.models import AuditImage, ImageFingerprint
from generation.untrusted_images import open_image

MAX_CANDIDATES = 10
PART_MATCH = 0.9  # a picture whose watermark reads is the stored image's (a part of it) at this correlation


def trace_image(upload, *, staff) -> dict:
    """What sdweb knows about the uploaded image, for `staff` (who needs generation.trace_image;
    each trace is a staff action); ValueError names the field for a bad upload."""
    result = _trace(upload)
    staff_action(staff=staff, event=StaffEvent.TRACE_IMAGE, target=result["image_id"] or "(no id found)",
                 details=result["message"])
    return result


def _trace(upload) -> dict:
    if upload is None:
        raise ValueError("image: upload a PNG, JPEG or WebP file")
    data = upload.read(settings.SDWEB["UPLOAD_MAX_BYTES"] + 1)
    picture = open_image(data, field="image")
    pixels = picture.convert("RGB")
    reading = watermark_reading(pixels)
    marking = read_png_marking(picture)
    result = {"found": False, "method": None, "image_id": None, "confidence": None, "distance": None,
              "candidates": [], "read": {
                  "watermark": reading.payload.hex() if reading else None,
                  "watermark_scheme": reading.method if reading else None,
                  "metadata": marking["image_id"] or None, "ai_generated_marking": marking["ai_generated"],
                  "parameters": read_png_parameters(picture),
                  "c2pa": read_credentials(data, PILImage.MIME.get(picture.format, "image/png"))}}
    query = hypotheses(pixels)
    mismatch = ""
    if reading and (row := _audit_image(int.from_bytes(reading.payload, "big"))):
        how = f"scheme {reading.method}" + (f", read at {reading.scale:g}x its size" if reading.scale != 1 else "") + (
            f", the copy {reading.turned}" if reading.turned else "")
        # the picture turned back as the watermark was read, to compare it with the stored image
        agreement = _agreement(row.image_id, hypotheses(reading.untouched(pixels)) if reading.turned else query)
        if agreement and agreement[0] <= MATCH_DISTANCE:
            return _found(result, row, "watermark", reading.confidence,
                          f"Watermark read ({how}; {reading.confidence:.0%} of its coded cells agree); the picture "
                          f"matches the stored image (distance {agreement[0]} of 128 bits, {agreement[1]}).",
                          distance=agreement[0])
        if (match := _part_of_stored(row.image_id, reading, pixels)) is not None and match >= PART_MATCH:
            return _found(result, row, "watermark", reading.confidence,
                          f"Watermark read ({how}; {reading.confidence:.0%} of its coded cells agree); the picture "
                          f"is part of the stored image (correlation {match:.2f}, threshold {PART_MATCH}).")
        mismatch = (f"The watermark of image {row.image_id:016x} was read, but the picture doesn't match it "
                    + (f"(distance {agreement[0]} of 128 bits at best, threshold {MATCH_DISTANCE}): the watermark "
                       "was copied or forged." if agreement else "(no fingerprint of it is stored to compare)."))
    matches = [(row, distance, how) for image_id, distance, how in similar_images(pixels, query)
               if (row := _audit_image(image_id))]
    if matches:
        row, distance, how = matches[0]
        result["candidates"] = [_candidate(*match) for match in matches[:MAX_CANDIDATES]]
        others = f" {len(matches) - 1} more image(s) are within the threshold: see the candidates." if matches[1:] else ""
        unread = "the watermark names no image made here" if reading else "the watermark was not readable"
        return _found(result, row, "similarity", round(1 - distance / 128, 3),
                      f"Matched by similarity (distance {distance} of 128 bits, {how}; threshold {MATCH_DISTANCE}); "
                      f"{mismatch or unread + '.'}{others}", distance=distance)
    if mismatch:
        result["message"] = mismatch + " No stored image is similar."
        return result
    if marking["image_id"] and (row := _audit_image(int(marking["image_id"], 16))):
        return _found(result, row, "metadata", None,
                      "No watermark could be read and no stored image is similar; found through the PNG "
                      "metadata, which anyone can edit.")
    said = reading.payload.hex() if reading else marking["image_id"]
    result["message"] = (f"The {'watermark' if reading else 'metadata'} reads {said}, but no audit row holds that "
                         "image id (not made here, or pruned), and no stored image is similar." if said else
                         "No watermark could be read, no stored image is similar and the file carries no sdweb "
                         "metadata.")
    return result


def _agreement(image_id: int, query: list[Hypothesis]) -> tuple[int, str] | None:
    """How near the picture is to the image `image_id` as it was handed out (its stored
    fingerprint, else its file while it exists); None when neither is left."""
    stored = ImageFingerprint.objects.filter(image_id=image_id).first()
    if stored is None:
        image = Image.objects.filter(pk=image_id).first()
        if image is None:
            return None
        with default_storage.open(image.png.name, "rb") as file:
            stored = ImageFingerprint.of(image_id, PILImage.open(file, formats=["PNG"]).convert("RGB"))
    return closest(query, Fingerprint(stored.phash, stored.whash, stored.width, stored.height))


def _part_of_stored(image_id: int, reading, pixels: PILImage.Image) -> float | None:
    """How well the picture — turned back and resized as its watermark was read, less the corners a
    turn left empty — matches the best place in the stored image (normalised correlation of their
    blurred luminance: a crop, a turn or a mirror image the hashes can't compare), while the file
    exists; None without it. A turn is tried within half a degree of the one read."""
    import cv2  # OpenCV comes with invisible-watermark

    image = Image.objects.filter(pk=image_id).first()
    if image is None:
        return None
    with default_storage.open(image.png.name, "rb") as file:
        stored = _blurred(PILImage.open(file, formats=["PNG"]).convert("L"))
    copy = reading.untouched(pixels)
    copy = copy.resize((round(copy.width * reading.scale), round(copy.height * reading.scale)), PILImage.BICUBIC)
    degrees, best = reading.undo[2], None
    for fine in ((-0.5, -0.25, 0.0, 0.25, 0.5) if degrees else (0.0,)):
        turned = copy.rotate(fine, resample=PILImage.BICUBIC) if fine else copy
        part = _blurred(turned.convert("L"))
        margin = [round(side * (0.18 if degrees else 0.02)) for side in part.shape]
        part = part[margin[0]:part.shape[0] - margin[0], margin[1]:part.shape[1] - margin[1]]
        if min(part.shape) < 64 or part.shape[0] > stored.shape[0] or part.shape[1] > stored.shape[1]:
            return best
        score = float(cv2.matchTemplate(stored, part, cv2.TM_CCOEFF_NORMED).max())
        best = score if best is None else max(best, score)
    return best


def _blurred(luma: PILImage.Image) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(np.asarray(luma, dtype=np.float32), (0, 0), 2.0)


def _audit_image(image_id: int) -> AuditImage | None:
    return AuditImage.objects.select_related("audit").filter(image_id=image_id).first()


def _found(result: dict, row: AuditImage, method: str, confidence, message: str, distance=None) -> dict:
    audit = row.audit
    result.update(found=True, method=method, image_id=f"{row.image_id:016x}", confidence=confidence,
                  distance=distance, message=message, job_id=str(audit.job_id), audit_id=audit.pk,
                  owner=audit.username, owner_id=audit.user_id, account_exists=audit.user_id is not None,
                  prompt=audit.prompt, negative_prompt=audit.negative_prompt, created_at=audit.created_at.isoformat(),
                  checkpoint=audit.checkpoint, params=audit.params,
                  image_exists=Image.objects.filter(pk=row.image_id).exists())
    return result


def _candidate(row: AuditImage, distance: int, how: str) -> dict:
    return {"image_id": f"{row.image_id:016x}", "distance": distance, "how": how, "job_id": str(row.audit.job_id),
            "owner": row.audit.username, "prompt": row.audit.prompt, "created_at": row.audit.created_at.isoformat()}


def similar_images(image: PILImage.Image, query: list[Hypothesis] | None = None) -> list[tuple[int, int, str]]:
    """(image id, distance, how it was matched) of the stored images within MATCH_DISTANCE of the
    image or of an original it may have been cropped from (`query`: its hypotheses), nearest first."""
    query = query or hypotheses(image)
    rows = _pg_candidates(query) if connection.vendor == "postgresql" else ImageFingerprint.objects.values_list(
        "image_id", "phash", "whash", "width", "height")
    table = np.array(list(rows), dtype=np.int64).reshape(-1, 5)
    return [(int(table[index, 0]), distance, how) for index, distance, how in nearest(query, table[:, 1:])]


def _pg_candidates(query: list[Hypothesis]) -> list[tuple]:
    """Rows that may be within MATCH_DISTANCE of a hypothesis: one parallel scan of bit counts,
    each hash's own count a first test, and each aspect ratio tested once for its hypotheses."""
    groups: dict[float | None, list[Hypothesis]] = {}
    for hypothesis in query:
        groups.setdefault(hypothesis.aspect, []).append(hypothesis)
    tests, params = [], []
    for aspect, members in groups.items():
        hashes = " OR ".join(["(bit_count((whash # (%s)::bigint)::bit(64)) <= %s"
                              " AND bit_count((phash # (%s)::bigint)::bit(64)) <= %s)"] * len(members))
        if aspect is None:
            tests.append(f"({hashes})")
        else:  # width/height within the tolerance, in integers (a division per row costs more)
            tests.append(f"(width * 1000 BETWEEN height * %s AND height * %s AND ({hashes}))")
            params += [round((aspect - ASPECT_TOLERANCE) * 1000), round((aspect + ASPECT_TOLERANCE) * 1000)]
        for member in members:
            params += [member.fingerprint.whash, MATCH_DISTANCE, member.fingerprint.phash, MATCH_DISTANCE]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT image_id, phash, whash, width, height FROM {ImageFingerprint._meta.db_table} "
                       f"WHERE {' OR '.join(tests)}", params)
        return cursor.fetchall()


def verify_image(upload) -> dict:
    """The public answer to "was this made here?": when, with which checkpoint, and who made it
    and where it is shared only for an image its owner made public (their name only if they chose
    to be named). Never a prompt, a private image's owner or a job; no staff action."""
    from gallery.selectors import public_name

    traced = _trace(upload)
    c2pa = traced["read"]["c2pa"]
    answer = {"made_here": False, "certainty": None, "made_at": None, "checkpoint": None, "distance": None,
              "shared": None, "c2pa": {k: c2pa[k] for k in ("present", "issuer", "ai_generated", "trusted", "problems")
                                       if k in c2pa}}
    if traced["method"] in ("watermark", "similarity"):
        answer |= {"made_here": True, "made_at": traced["created_at"][:10], "checkpoint": traced["checkpoint"],
                   "certainty": "certain" if traced["method"] == "watermark" else "probable",
                   "distance": traced["distance"]}
        image = Image.objects.select_related("owner__studio_settings").filter(
            pk=int(traced["image_id"], 16), is_public=True, hidden=False).first()
        if image is not None:
            answer["shared"] = {"by": public_name(image) or None, "share_slug": image.share_slug}
        answer["message"] = (
            f"Made here on {answer['made_at']} with {answer['checkpoint']}: its watermark says so and the picture "
            "matches the image it names." if traced["method"] == "watermark" else
            f"Probably made here: it looks like an image made here on {answer['made_at']} with {answer['checkpoint']} "
            f"(distance {traced['distance']} of 128 bits), though no watermark of this studio could be read in it.")
    elif traced["method"] == "metadata":
        answer["message"] = ("Its file metadata names an image made here, but anyone can write metadata, and neither "
                             "a watermark nor the picture confirms it.")
    elif traced["read"]["watermark"] and "copied or forged" in traced.get("message", ""):
        answer["message"] = ("It carries a watermark of this studio, but the picture doesn't match the image the mark "
                             "names: the mark was copied onto it. Not made here, as far as this studio can tell.")
    else:
        answer["message"] = "No sign of this studio: no watermark of it, and nothing made here looks like it."
    return answer


def fingerprints_backfill() -> int:
    """Fingerprint the stored images made before the similarity index (or whose row is missing), so
    the trace finds their copies too; returns how many were added. Safe to run again."""
    added = 0
    missing = Image.objects.exclude(id__in=ImageFingerprint.objects.values("image_id")).only("id", "png")
    for image in missing.iterator(chunk_size=200):
        with image.png.open("rb") as file:
            picture = PILImage.open(file)
            picture.load()
        ImageFingerprint.objects.bulk_create([ImageFingerprint.of(image.id, picture)], ignore_conflicts=True)
        added += 1
    return added
