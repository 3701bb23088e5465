"""The sd-webui-controlnet extension's units (`alwayson_scripts.controlnet.args`) as submit takes them."""

from generation.untrusted_images import decode_base64

UNIT_FIELDS = ("module", "model", "weight", "guidance_start", "guidance_end", "control_mode", "resize_mode",
               "processor_res", "threshold_a", "threshold_b")


def controlnet_units(payload: dict, init_image) -> list[dict]:
    """`alwayson_scripts.controlnet.args` -> submit's controlnet units. Disabled units and units
    with no model are skipped, as the extension skips them; a unit without an image takes the
    img2img starting image; any other always-on script with arguments is refused by name."""
    scripts = payload.get("alwayson_scripts") or {}
    if not isinstance(scripts, dict):
        raise ValueError("alwayson_scripts: an object is required")
    units = []
    for name, script in scripts.items():
        args = script.get("args") if isinstance(script, dict) else script
        if name.lower() != "controlnet":
            if args:
                raise ValueError(f"alwayson_scripts.{name}: this script is not available here (only controlnet)")
            continue
        if not isinstance(args, list):
            raise ValueError(f"alwayson_scripts.{name}.args: a list of units is required")
        for k, unit in enumerate(args):
            field = f"alwayson_scripts.{name}.args[{k}]"
            if not isinstance(unit, dict):
                raise ValueError(f"{field}: an object is required")
            if not unit.get("enabled", True) or unit.get("model") in (None, "", "None", "none"):
                continue
            units.append(_unit(unit, field, init_image, payload))
    return units


def _unit(unit: dict, field: str, init_image, payload: dict) -> dict:
    image = unit.get("image", unit.get("input_image"))
    if isinstance(image, dict):  # {"image": ..., "mask": ...}
        if image.get("mask"):
            raise ValueError(f"{field}.image.mask: ControlNet masks are not supported")
        image = image.get("image")
    if unit.get("mask") or unit.get("mask_image"):
        raise ValueError(f"{field}.mask: ControlNet masks are not supported")
    found = {k: unit[k] for k in UNIT_FIELDS if unit.get(k) is not None}
    found["module"] = str(found.get("module", "none")).split(" (")[0].lower()
    if unit.get("guessmode") and "control_mode" not in unit:
        found["control_mode"] = 2
    if unit.get("pixel_perfect"):  # the map at the size the image is made
        found["processor_res"] = min(payload.get("width", 512), payload.get("height", 512))
    found["image"] = decode_base64(image, field=f"{field}.image") if image else init_image
    if found["image"] is None:
        raise ValueError(f"{field}.image: a base64-encoded image is required (txt2img has no starting image to use)")
    return found


def a1111_field(field: str | None) -> str | None:
    """submit's `controlnet[k].x` as the client wrote it."""
    if field and field.startswith("controlnet["):
        return "alwayson_scripts.controlnet.args[" + field.removeprefix("controlnet[")
    return "alwayson_scripts.controlnet.args" if field == "controlnet" else field
