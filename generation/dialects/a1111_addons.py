"""A1111's extra networks (/sdapi/v1/loras, /embeddings) and the sd-webui-controlnet extension's
API (/controlnet/..., `alwayson_scripts.controlnet.args` units), as their clients send them."""

import base64

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from generation.dialects.a1111 import A1111View, a1111_error
from generation.engine.controlmaps import MODULES, control_map
from generation.library.addons import addons_scan
from generation.library.models import AddOn
from generation.library.selectors import addons_for, user_checkpoint
from generation.untrusted_images import decode_base64, png_bytes, read_image


class Loras(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        return Response([{"name": a.name, "alias": a.name, "path": f"{a.name}.safetensors",
                          "metadata": {"sshs_model_hash": a.sha256, "ss_base_model_version": a.family,
                                       "trigger_words": a.trigger_words}}
                         for a in _unique(addons_for(request.user, kind=AddOn.LORA))])


class RefreshLoras(A1111View):
    """Staff with the right to add add-ons rescan the folders; for anyone else the list is
    always fresh already (uploads are registered when they arrive)."""

    @extend_schema(exclude=True)
    def post(self, request):
        if request.user.has_perm("generation.add_addon"):
            addons_scan(staff=request.user)
        return Response(None)


class Embeddings(A1111View):
    """As A1111 lists them: those of the current checkpoint's family loaded, the rest skipped."""

    @extend_schema(exclude=True)
    def get(self, request):
        checkpoint = user_checkpoint(request.user)
        family = checkpoint.family.split("-")[0] if checkpoint else ""
        loaded, skipped = {}, {}
        for addon in _unique(addons_for(request.user, kind=AddOn.EMBEDDING)):
            entry = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None,
                     "vectors": None, "hash": addon.short_hash}
            (loaded if addon.family == family else skipped)[addon.name] = entry
        return Response({"loaded": loaded, "skipped": skipped})


class ControlNetVersion(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        return Response({"version": 2})


class ControlNetModels(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        return Response({"model_list": [a.title for a in _unique(addons_for(request.user, kind=AddOn.CONTROLNET))]})


class ControlNetModules(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        detail = {name: {"model_free": True, "sliders": [
            {"name": label, "value": default, "min": 1, "max": 255} for label, default in filter(None, (a, b))]}
            for name, (_, a, b) in MODULES.items()}
        return Response({"module_list": list(MODULES), "module_detail": detail})


class ControlNetDetect(A1111View):
    """Run a preprocessor on images and give back the control maps (base64 PNGs)."""

    @extend_schema(exclude=True)
    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        images = data.get("controlnet_input_images", data.get("controlnet_images"))
        if not isinstance(images, list) or not images or len(images) > 4:
            return a1111_error(422, "controlnet_input_images: a list of one to four base64-encoded images is required")
        module = str(data.get("controlnet_module") or "none").split(" (")[0].lower()
        try:
            maps = [control_map(read_image(decode_base64(image, field="controlnet_input_images"),
                                           field="controlnet_input_images").image, module,
                                data.get("controlnet_processor_res", 512), data.get("controlnet_threshold_a", -1),
                                data.get("controlnet_threshold_b", -1)) for image in images]
        except ValueError as error:
            message = str(error)
            return a1111_error(422, message if message.startswith("controlnet") else f"controlnet_{message}")
        return Response({"images": [base64.b64encode(png_bytes(m)).decode() for m in maps], "info": "Success"})


class Scripts(A1111View):
    """The scripts clients look for: the X/Y/Z plot, and ControlNet's names as its extension lists
    them (webuiapi sends empty ControlNet args with each job only when it sees "controlnet m2m";
    otherwise the units of an earlier call stay in its default arguments and go with the next)."""

    @extend_schema(exclude=True)
    def get(self, request):
        return Response({"txt2img": ["x/y/z plot", "controlnet", "controlnet m2m"],
                         "img2img": ["controlnet", "controlnet m2m"]})


def _unique(addons):
    """One entry per name: the user's own where names clash (addons_for orders it first)."""
    seen, found = set(), []
    for addon in addons:
        if addon.name not in seen:
            seen.add(addon.name)
            found.append(addon)
    return found
