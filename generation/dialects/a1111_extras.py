"""A1111's upscalers and its "extras" upscale of any image a client sends: resized in pixel space, charged by the
size it makes, given back without metadata. It makes nothing new, so it is neither watermarked
nor kept in the gallery (an upscale of a gallery image is a job: image_upscale in the gallery)."""

import base64

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from generation.accounts.roles import allowance
from generation.credits.ledger import credits_change, locked_account, quote_cost
from generation.credits.models import CreditEntry
from generation.dialects.a1111 import A1111View, a1111_error
from generation.engine.request import LATENT_UPSCALERS, PIXEL_UPSCALERS
from generation.engine.upscale import UPSCALERS, check_upscale, resize_by, upscaled_size
from generation.jobs.presenters import refusal_status
from generation.jobs.submit import Refused
from generation.jobs.validation import RefusalCode, within_role
from generation.library.models import AddOn
from generation.library.selectors import addons_for, upscaler_models
from generation.untrusted_images import decode_base64, flattened, png_bytes, read_image


def extras_upscale(*, user, data: bytes, scale: float, upscaler: str, to_width: int = 0) -> bytes:
    """The image in `data` made `scale` times larger (or `to_width` wide), as PNG; Refused names
    the field."""
    if upscaler not in UPSCALERS and upscaler in upscaler_models(user):
        raise Refused(f"{upscaler} is an upscaler model: it runs on the GPU workers, as hires fix's upscaler or the "
                      f"image page's Upscale; here only {', '.join(UPSCALERS)}.", field="upscaler")
    try:
        image = flattened(read_image(data, field="image").image)
        if to_width:
            scale = to_width / image.width
        check_upscale(scale, upscaler, *image.size, max_side=settings.SDWEB["UPSCALE_MAX_SIDE"])
    except ValueError as error:
        field, _, message = str(error).partition(": ") if str(error).startswith("image:") else ("", "", str(error))
        raise Refused(message or str(error), field=field or str(error).split(" ")[0]) from error
    within_role(allowance(user), None, {"upscale_by": scale})  # (paid from the user's own credits, never a team's)
    cost = quote_cost(width=0, height=0, steps=0, num_images=1, passes=[(*upscaled_size(*image.size, scale), 1)])
    with transaction.atomic():
        balance = locked_account(user).balance
        if balance < cost:
            raise Refused(f"This costs {cost} credits and your balance is {balance}.", code=RefusalCode.INSUFFICIENT_CREDITS)
        credits_change(user=user, kind=CreditEntry.CHARGE, amount=-cost, reason=f"upscale ×{scale:g} ({upscaler})")
    return png_bytes(resize_by(image, scale, upscaler))


class Upscalers(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        models = addons_for(request.user, kind=AddOn.UPSCALER)
        return Response([{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
                         for name in ("None", *PIXEL_UPSCALERS)] + [
                        {"name": m.name, "model_name": m.name, "model_path": None, "model_url": None, "scale": m.scale}
                        for m in models])


class ExtraSingleImage(A1111View):
    """Upscaling in pixels only: face restoration, a second upscaler and upscaler models (they run
    on the GPU workers: an Upscale job) are refused by name."""

    @extend_schema(exclude=True)
    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        for field in ("gfpgan_visibility", "codeformer_visibility", "extras_upscaler_2_visibility"):
            if data.get(field) not in (None, 0, 0.0):
                return a1111_error(400, f"{field}: {data[field]!r} is not supported (only 0)")
        try:
            image = decode_base64(data.get("image"), field="image")
            # resize_mode 1: to a width (the aspect ratio kept; A1111 would crop to the height too)
            to_width = data.get("upscaling_resize_w") if data.get("resize_mode") == 1 else 0
            png = extras_upscale(user=request.user, data=image, scale=data.get("upscaling_resize", 2),
                                 upscaler=data.get("upscaler_1") or "None", to_width=to_width or 0)
        except ValueError as error:
            return a1111_error(400, str(error))
        except Refused as refusal:
            field = {"upscale_by": "upscaling_resize", "upscaler": "upscaler_1"}.get(refusal.field, refusal.field)
            return a1111_error(refusal_status(refusal), f"{field}: {refusal}" if field else str(refusal))
        return Response({"html_info": "", "image": base64.b64encode(png).decode()})


class LatentUpscaleModes(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        return Response([{"name": name} for name in LATENT_UPSCALERS])
