"""The add-on library: LoRAs, embeddings and ControlNets the operator drops into the add-on folders
(registered by scan_models or the admin), and LoRAs and embeddings users upload for themselves."""

import hashlib
import json
import re
import tempfile
import unicodedata
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q, Sum

from generation.accounts.models import StaffEvent
from generation.accounts.roles import allowance
from generation.accounts.staff import staff_action
from generation.engine.esrgan_file import describe as describe_upscaler
from generation.engine.families import addon_family, file_metadata, file_sha256
from generation.engine.request import JobError
from generation.library.models import AddOn
from generation.library.storage import storage_full
from generation.untrusted_images import png_bytes, read_image

FOLDERS = {AddOn.LORA: "LORA_DIR", AddOn.EMBEDDING: "EMBEDDINGS_DIR", AddOn.CONTROLNET: "CONTROLNET_DIR",
           AddOn.UPSCALER: "ESRGAN_DIR"}
UPLOADABLE = (AddOn.LORA, AddOn.EMBEDDING)
SUFFIXES = {kind: (".safetensors", ".pth") if kind == AddOn.UPSCALER else (".safetensors",) for kind in FOLDERS}
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
# A LoRA's name goes inside <lora:...>; an embedding's is a word of the prompt.
_NAMES = {AddOn.LORA: re.compile(r"^[^\s<>:][^<>:\x00-\x1f]{0,99}$"), AddOn.EMBEDDING: re.compile(r"^[\w.-]{1,100}$"),
          AddOn.CONTROLNET: re.compile(r"^[^\s\[\]][^\[\]\x00-\x1f]{0,99}$")}
_NAMES[AddOn.UPSCALER] = _NAMES[AddOn.CONTROLNET]


def printable(name: str) -> bool:
    """No control, format (bidi overrides, zero-width) or unassigned characters: a name reads as
    what it is and can be typed back."""
    return all(not unicodedata.category(c).startswith("C") for c in name)


def check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAMES[kind].match(name) or name != name.strip() or not printable(name):
        allowed = {AddOn.LORA: "up to 100 visible characters without < > or :",
                   AddOn.EMBEDDING: "one word of letters, digits, '.', '-' or '_' (it is written in prompts)",
                   AddOn.CONTROLNET: "up to 100 visible characters without [ or ]",
                   AddOn.UPSCALER: "up to 100 visible characters without [ or ]"}[kind]
        raise ValueError(f"name: {name!r} can't name a {dict(AddOn.KINDS)[kind]}: use {allowed}")


def trigger_words(path) -> str:
    """The words a LoRA was trained on, most frequent first (kohya's ss_tag_frequency), or its
    modelspec trigger phrase."""
    meta = file_metadata(path)
    if meta.get("modelspec.trigger_phrase"):
        return str(meta["modelspec.trigger_phrase"])[:500]
    try:
        datasets = json.loads(meta.get("ss_tag_frequency") or "{}")
        counts: dict[str, int] = {}
        for tags in datasets.values():
            for tag, count in tags.items():
                counts[tag.strip()] = counts.get(tag.strip(), 0) + int(count)
    except (ValueError, AttributeError, TypeError):
        return ""
    return ", ".join(sorted(counts, key=lambda t: -counts[t])[:8])[:500]


def addon_register(*, kind: str, name: str, source: str, config: str = "", progress=None) -> AddOn:
    """Register (or update) one of the operator's add-on files (a ControlNet may also be a diffusers
    folder: its config.json and weights; an upscaler a .pth); ValueError names what is wrong."""
    path = Path(source)
    weights = path / DIFFUSERS_WEIGHTS if kind == AddOn.CONTROLNET and path.is_dir() else path
    if weights.suffix.lower() not in SUFFIXES[kind] or not weights.is_file() or (
            weights != path and not (path / "config.json").is_file()):
        raise ValueError(f"{path.name}: an add-on is one .safetensors file (a ControlNet may also be a diffusers "
                         f"folder: config.json and {DIFFUSERS_WEIGHTS}; an upscaler a .pth)")
    check_name(kind, name)
    scale = describe_upscaler(weights) if kind == AddOn.UPSCALER else 0
    family = "any" if scale else addon_family(kind, weights)
    if config and not (Path(config) / "config.json").is_file():
        raise ValueError(f"config {Path(config).name!r} is not a diffusers config folder (no config.json)")
    stat = weights.stat()
    known = AddOn.objects.filter(kind=kind, owner=None, source=str(path), file_size=stat.st_size,
                                 file_mtime=stat.st_mtime).first()
    sha256 = known.sha256 if known else file_sha256(weights, progress)
    preview = _preview_beside(path)
    addon, _ = AddOn.objects.update_or_create(kind=kind, name=name, owner=None, defaults=dict(
        family=family, source=str(path), stored=False, config=str(config), sha256=sha256, file_size=stat.st_size,
        file_mtime=stat.st_mtime, scale=scale, trigger_words=trigger_words(path) if kind == AddOn.LORA else "",
        enabled=True, **({"preview": preview} if preview else {})))
    return addon


def _preview_beside(path: Path) -> str:
    """A1111's `name.preview.png` (or .jpg/.webp) beside the file, stored as a clean PNG."""
    for suffix in (".preview.png", ".preview.jpg", ".preview.jpeg", ".preview.webp"):
        picture = path.with_name(path.stem + suffix)
        if picture.is_file():
            try:
                return _store_preview(read_image(picture.read_bytes(), field="preview").image)
            except ValueError:
                return ""
    return ""


def _store_preview(image) -> str:
    image.thumbnail((512, 512))
    data = png_bytes(image)
    name = f"addon-previews/{hashlib.sha256(data).hexdigest()}.png"
    if not default_storage.exists(name):
        default_storage.save(name, ContentFile(data))
    return name


def addons_scan(*, staff=None, progress_for=None) -> tuple[list[AddOn], dict[str, str]]:
    """Register every .safetensors in the LoRA, embeddings, ControlNet and ESRGAN folders (and .pth
    in ESRGAN's), named by the file name without the extension; library add-ons whose file is gone
    are disabled. Returns (the add-ons, {file: why it was not registered}); a scan by `staff` is a
    staff action."""
    found, skipped, seen = [], {}, set()
    for kind, setting in FOLDERS.items():
        root = Path(settings.SDWEB[setting])
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES[kind]) if root.is_dir() else []:
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            if kind == AddOn.CONTROLNET and path.name == DIFFUSERS_WEIGHTS and (path.parent / "config.json").is_file():
                path = path.parent  # a diffusers folder: named after the folder, its config read
            shown, name = f"{root.name}/{path.relative_to(root)}", (path.name if path.is_dir() else path.stem)[:100]
            existing = AddOn.objects.filter(kind=kind, owner=None, name=name).first()
            if existing and existing.source != str(path):
                skipped[shown] = f"a {existing.get_kind_display()} called {name!r} already exists"
                continue
            try:
                addon = addon_register(kind=kind, name=name, source=str(path),
                                       config=existing.config if existing else "",
                                       progress=progress_for(path) if progress_for else None)
            except ValueError as error:
                skipped[shown] = str(error)
                continue
            found.append(addon)
            seen.add(addon.pk)
    AddOn.objects.filter(owner=None, enabled=True).exclude(pk__in=seen).filter(
        Q(*[Q(source__startswith=str(settings.SDWEB[s])) for s in FOLDERS.values()], _connector=Q.OR)).update(
        enabled=False)
    if staff is not None:
        staff_action(staff=staff, event=StaffEvent.SCAN_ADDONS, target="add-on folders",
                     details=json.dumps({"registered": [a.title for a in found], "skipped": skipped}))
    return found, skipped


def addon_upload(*, user, kind: str, name: str, file, preview=None) -> AddOn:
    """A user's own LoRA or embedding: a .safetensors file that is what it claims to be, within the
    size cap and the user's quota, private to them; ValueError("field: why")."""
    if kind not in UPLOADABLE:
        raise ValueError("kind: upload a LoRA or an embedding (ControlNets come from the operator)")
    check_name(kind, name)
    if not str(getattr(file, "name", "")).lower().endswith(".safetensors"):
        raise ValueError("file: only .safetensors files are accepted (pickles can run code when loaded)")
    limit = settings.SDWEB["ADDON_MAX_BYTES"]
    if file.size > limit:
        raise ValueError(f"file: it is {file.size / 2**20:.1f} MB; at most {limit / 2**20:.0f} MB is allowed")
    _check_room(user, kind, name, file.size)
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as copy:
        digest = hashlib.sha256()
        for chunk in file.chunks():
            copy.write(chunk)
            digest.update(chunk)
        copy.flush()
        try:
            family = addon_family(kind, copy.name)
        except ValueError as error:
            raise ValueError("file: " + str(error).replace(Path(copy.name).name, "the file")) from None
        words = trigger_words(copy.name) if kind == AddOn.LORA else ""
        shown = _store_preview(read_image(preview.read(), field="preview").image) if preview else ""
        sha256, stored = digest.hexdigest(), f"addons/{digest.hexdigest()}.safetensors"
        try:
            with transaction.atomic():  # the quota is checked again under a lock on the user's row
                get_user_model().objects.select_for_update().filter(pk=user.pk).first()
                _check_room(user, kind, name, file.size)
                if not default_storage.exists(stored):  # named by content: two users' same file is kept once
                    copy.seek(0)
                    default_storage.save(stored, File(copy))
                return AddOn.objects.create(kind=kind, name=name, family=family, source=stored, stored=True,
                                            sha256=sha256, file_size=file.size, trigger_words=words, preview=shown,
                                            owner=user)
        except BaseException:
            _delete_unused_files([AddOn(source=stored, stored=True, preview=shown)])
            raise


def _check_room(user, kind: str, name: str, size: int) -> None:
    if not allowance(user).own_addons:
        raise ValueError(f"file: your role ({', '.join(allowance(user).roles)}) may not upload add-ons")
    if full := storage_full(user, size):
        raise ValueError(f"file: {full}")
    quota = settings.SDWEB["ADDON_QUOTA_BYTES"]
    used = AddOn.objects.filter(owner=user).aggregate(total=Sum("file_size"))["total"] or 0
    if used + size > quota:
        raise ValueError(f"file: your add-ons would take {(used + size) / 2**20:.1f} MB; your quota is "
                         f"{quota / 2**20:.0f} MB. Delete one first.")
    if AddOn.objects.filter(owner=user, kind=kind, name=name).exists():
        raise ValueError(f"name: you already have a {dict(AddOn.KINDS)[kind]} called {name!r}")


def addon_delete(*, user, addon_id: int) -> None:
    """A user removes one of their own uploads (jobs that used it keep its name and hash)."""
    addon = AddOn.objects.get(pk=addon_id, owner=user)
    addon.delete()
    _delete_unused_files([addon])


def addons_remove(*, staff, addons: list[AddOn]) -> None:
    """Staff remove add-ons (uploads' files go too, unless another entry has the same file)."""
    with transaction.atomic():
        for addon in addons:
            staff_action(staff=staff, event=StaffEvent.DELETE_ADDON, target=f"{addon.get_kind_display()} {addon.title}",
                         details=f"owner {addon.owner.username if addon.owner else '(library)'}")
        AddOn.objects.filter(pk__in=[a.pk for a in addons]).delete()
    _delete_unused_files(addons)


def addons_delete_owned(*, user) -> None:
    """Account deletion: the user's uploads and their files."""
    owned = list(AddOn.objects.filter(owner=user))
    AddOn.objects.filter(owner=user).delete()
    _delete_unused_files(owned)


def _delete_unused_files(removed: list[AddOn]) -> None:
    for addon in removed:
        if addon.stored and not AddOn.objects.filter(source=addon.source).exists():
            default_storage.delete(addon.source)
        if addon.preview and not AddOn.objects.filter(preview=addon.preview).exists():
            default_storage.delete(addon.preview)


@transaction.atomic
def addon_publish(*, staff, addon: AddOn, published: bool) -> None:
    """Staff show a user's upload to everyone, or take it back."""
    if not staff.has_perm("generation.change_addon"):
        raise PermissionError("publishing an add-on needs the generation.change_addon permission")
    AddOn.objects.filter(pk=addon.pk).update(published=published)
    staff_action(staff=staff, event=StaffEvent.PUBLISH_ADDON if published else StaffEvent.UNPUBLISH_ADDON,
                 target=f"{addon.get_kind_display()} {addon.name} [{addon.short_hash}]",
                 details=f"owner {addon.owner.username if addon.owner else '(library)'}")


def addon_local_path(addon_or_record) -> str:
    """The file a worker reads: the operator's own path, or an upload copied out of the site's
    storage (S3 or a local folder) into the worker's cache, by hash."""
    addon = addon_or_record
    if not addon.stored:
        return addon.source
    try:
        return default_storage.path(addon.source)
    except NotImplementedError:  # remote storage
        cached = Path(settings.VAR_DIR) / "addon-cache" / f"{addon.sha256}.safetensors"
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".part")
            with default_storage.open(addon.source, "rb") as source, open(partial, "wb") as target:
                for chunk in iter(lambda: source.read(2**20), b""):
                    target.write(chunk)
            partial.replace(cached)
        return str(cached)


def engine_addons(records: list[dict]) -> dict:
    """A job's add-ons (its `addons` records) as the engine takes them (loras, embeddings,
    controlnets, upscaler_model), each file found by its hash (renames and re-registrations don't
    matter); JobError when one is gone."""
    from PIL import Image as PILImage

    from generation.engine.request import ControlUnit, LoraUse, ModelRef

    found, upscaler = {"loras": [], "embeddings": [], "controlnets": []}, {}
    for record in records:
        addon = AddOn.objects.filter(kind=record["kind"], sha256=record["sha256"]).order_by("-enabled").first()
        if addon is None:
            raise JobError(f"{dict(AddOn.KINDS)[record['kind']]} {record['name']!r} is no longer in the library")
        ref = ModelRef(addon_local_path(addon), family=addon.family, config=addon.config, name=record["name"],
                       hash=addon.short_hash)
        if record["kind"] == AddOn.LORA:
            found["loras"].append(LoraUse(ref, record["unet"], record["te"]))
        elif record["kind"] == AddOn.EMBEDDING:
            found["embeddings"].append(ref)
        elif record["kind"] == AddOn.UPSCALER:
            upscaler["upscaler_model"] = ref
        else:
            with default_storage.open(record["image"], "rb") as file:
                image = PILImage.open(file, formats=["PNG"]).convert("RGB")
            settings_ = {k: record[k] for k in ("module", "weight", "guidance_start", "guidance_end", "control_mode",
                                                "resize_mode", "processor_res", "threshold_a", "threshold_b")}
            found["controlnets"].append(ControlUnit(ref, image, **settings_))
    return {k: tuple(v) for k, v in found.items()} | upscaler
