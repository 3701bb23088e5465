"""A1111's "extras" upscale of any image a client sends: resized in pixel space, charged by the
size it makes, given back without metadata. It makes nothing new, so it is neither watermarked
nor kept in the gallery (an upscale of a gallery image is a job: image_upscale in the gallery)."""

from django.conf import settings
from django.db import transaction

from generation.engine.upscale import UPSCALERS, check_upscale, resize_by, upscaled_size
from generation.models import CreditEntry
from generation.selectors import upscaler_models
from generation.services.credits import credits_change, locked_account, quote_cost
from generation.services.submit import Refused
from generation.uploads import flattened, png_bytes, read_image


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
    cost = quote_cost(width=0, height=0, steps=0, num_images=1, passes=[(*upscaled_size(*image.size, scale), 1)])
    with transaction.atomic():
        balance = locked_account(user).balance
        if balance < cost:
            raise Refused(f"This costs {cost} credits and your balance is {balance}.", code="insufficient_credits")
        credits_change(user=user, kind=CreditEntry.CHARGE, amount=-cost, reason=f"upscale ×{scale:g} ({upscaler})")
    return png_bytes(resize_by(image, scale, upscaler))
