from django import forms
from django.conf import settings
from django.forms.renderers import Jinja2

from generation.accounts.teams import OWN_CREDITS, paying_team, teams_of
from generation.credits.models import CreditAccount
from generation.engine.controlmaps import MODULES
from generation.engine.families import TXT2IMG_FAMILIES
from generation.engine.plot import SUPPORTED as PLOT_AXES
from generation.engine.request import (
    CONTROL_MODES,
    LATENT_UPSCALERS,
    MASKED_CONTENT,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    PIXEL_UPSCALERS,
    RESIZE_MODES,
)
from generation.engine.schedulers import SCHEDULERS
from generation.jobs.models import PromptStyle
from generation.library.models import AddOn, Checkpoint, Vae
from generation.library.selectors import addons_for, checkpoints_for, default_checkpoint

MAX_BATCH_COUNT = 8
SIZE_PRESETS = [(256, 256), (512, 512), (512, 768), (768, 512), (768, 768), (1024, 1024)]
# SDXL's usual sizes: about a megapixel, in the aspect ratios it was trained on.
SDXL_PRESETS = [(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344),
                (1536, 640), (640, 1536)]


class VaeSelect(forms.Select):
    """Each VAE says its latent channels, so the page offers only those that fit the checkpoint."""

    def create_option(self, name, value, *args, **kwargs):
        option = super().create_option(name, value, *args, **kwargs)
        if getattr(value, "instance", None) is not None:
            option["attrs"]["data-channels"] = value.instance.latent_channels
        return option


class PoolSelect(forms.Select):
    """Each choice of whose credits to spend carries that pool's balance, for the page's cost check."""

    balances: dict = {}

    def create_option(self, name, value, *args, **kwargs):
        option = super().create_option(name, value, *args, **kwargs)
        option["attrs"]["data-balance"] = self.balances.get(value, 0)
        return option


class ListedChoices(forms.models.ModelChoiceIterator):
    """A model field's choices from its queryset's results, loaded once per form: Django's own
    iterator queries again each time the field is rendered or its choices are looked at."""

    def __iter__(self):
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for obj in self.queryset if self.field.listed is None else self.field.listed:
            yield self.choice(obj)


class ListedModelChoiceField(forms.ModelChoiceField):
    iterator = ListedChoices
    listed = None  # the choices' objects when the form read them with others; the queryset checks a choice

    def list(self, queryset, objects: list) -> None:
        self.queryset, self.listed = queryset, objects


def pool_choices(user) -> tuple[list, dict]:
    """("own" and each of the user's teams, their balances) for the form's `team` field."""
    choices, balances = [(OWN_CREDITS, "My own credits and gallery")], {}
    if user is not None and user.is_authenticated:
        balances[OWN_CREDITS] = CreditAccount.objects.filter(user=user).values_list("balance", flat=True).first() or 0
        for team in teams_of(user).select_related("credits"):
            choices.append((team.slug, f"Team {team.name}: its credits and gallery"))
            balances[team.slug] = team.credits.balance if hasattr(team, "credits") else 0
    return choices, balances


# The studio form's ~50 widgets rendered through Django's Jinja2 copies of its widget templates: the
# same markup, for 13-16 % less of the studio page's CPU than through Django's template language.
# One renderer for every request (it holds the compiled templates); Django's admin keeps its own.
WIDGETS = Jinja2()


class GenerateForm(forms.Form):
    default_renderer = WIDGETS

    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=MAX_PROMPT_CHARS,
                             help_text="A1111 syntax works: (word:1.3), [word], BREAK.")
    negative_prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=MAX_PROMPT_CHARS, required=False)
    checkpoint = ListedModelChoiceField(queryset=Checkpoint.objects.none(), empty_label=None)
    width = forms.IntegerField(min_value=256, initial=512, widget=forms.NumberInput(attrs={"step": 8}))
    height = forms.IntegerField(min_value=256, initial=512, widget=forms.NumberInput(attrs={"step": 8}))
    steps = forms.IntegerField(min_value=1, max_value=MAX_STEPS, initial=20)
    guidance_scale = forms.FloatField(min_value=0, max_value=30, initial=7, label="Guidance scale")
    distilled_guidance_scale = forms.FloatField(min_value=0, max_value=30, initial=3.5, required=False,
                                                label="Distilled guidance", help_text="FLUX.1 [dev]: 3.5 suits most "
                                                "prompts; lower is looser.")
    scheduler = forms.ChoiceField(choices=[(name, name) for name in SCHEDULERS], initial="Euler a")
    seed = forms.IntegerField(min_value=-1, max_value=MAX_SEED, initial=-1, help_text="-1 picks a random seed.")
    subseed = forms.IntegerField(min_value=-1, max_value=MAX_SEED, initial=-1, required=False, label="Variation seed",
                                 help_text="Another seed to vary toward; -1 picks one.")
    subseed_strength = forms.FloatField(min_value=0, max_value=1, initial=0, required=False, label="Variation strength",
                                        help_text="0: off; 1: the variation seed's own image.",
                                        widget=forms.NumberInput(attrs={"step": 0.05}))
    clip_skip = forms.IntegerField(min_value=1, max_value=12, initial=1, required=False, label="Clip skip",
                                   help_text="SD 1.x: 2 suits many anime models.")
    refiner = ListedModelChoiceField(queryset=Checkpoint.objects.none(), required=False, empty_label="None",
                                     help_text="SDXL only: a refiner finishes the last steps.")
    vae = ListedModelChoiceField(queryset=Vae.objects.none(), required=False, label="VAE", empty_label="Automatic",
                                 help_text="Automatic: the checkpoint's default VAE, or its own.",
                                 widget=VaeSelect)
    refiner_switch_at = forms.FloatField(min_value=0.01, max_value=0.99, initial=0.8, required=False,
                                         label="Refiner switch at")

    team = forms.ChoiceField(required=False, label="Credits", widget=PoolSelect,
                             help_text="A team's job is paid from its pool and kept in its gallery, for its members.")
    styles = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple, label="Styles",
                                       help_text="Your saved styles: added to the prompts as the job runs.")

    # img2img / inpaint: the file, or an image of the gallery ("Use as starting image"); the mask
    # is painted in the page and sent as a PNG (white: repaint).
    init_image = forms.FileField(required=False, label="Starting image", widget=forms.ClearableFileInput(
        attrs={"accept": "image/png,image/jpeg,image/webp"}), help_text="PNG, JPEG or WebP: img2img starts from it.")
    init_image_id = forms.CharField(required=False, widget=forms.HiddenInput)
    mask = forms.FileField(required=False, widget=forms.FileInput(attrs={"hidden": True, "accept": "image/png"}))
    denoising_strength = forms.FloatField(min_value=0.01, max_value=1, initial=0.75, required=False,
                                          label="Denoising strength", help_text="How much changes; it runs "
                                          "steps × strength steps (and costs that).",
                                          widget=forms.NumberInput(attrs={"step": 0.01}))
    resize_mode = forms.TypedChoiceField(choices=list(enumerate(RESIZE_MODES)), coerce=int, initial=0, required=False,
                                         label="Resize mode")
    mask_blur = forms.IntegerField(min_value=0, max_value=64, initial=4, required=False, label="Mask blur")
    inpainting_mask_invert = forms.TypedChoiceField(choices=[(0, "Inpaint masked"), (1, "Inpaint not masked")],
                                                    coerce=lambda v: v in ("1", 1, True), initial=0, required=False,
                                                    label="Mask mode")
    inpainting_fill = forms.TypedChoiceField(choices=list(enumerate(MASKED_CONTENT)), coerce=int, initial=1,
                                             required=False, label="Masked content")
    inpaint_full_res = forms.BooleanField(required=False, label="Only masked",
                                          help_text="Repaint the mask's box at full size and paste it back.")
    inpaint_full_res_padding = forms.IntegerField(min_value=0, max_value=256, initial=32, required=False,
                                                  label="Only masked padding")
    enable_hr = forms.BooleanField(required=False, label="Hires fix", help_text="A second pass at a larger size.")
    hr_scale = forms.FloatField(min_value=1, max_value=4, initial=2, required=False, label="Upscale by",
                                widget=forms.NumberInput(attrs={"step": 0.05}))
    hr_upscaler = forms.ChoiceField(choices=[(n, n) for n in (*LATENT_UPSCALERS, *PIXEL_UPSCALERS)], initial="Latent",
                                    required=False, label="Upscaler")
    hr_second_pass_steps = forms.IntegerField(min_value=0, max_value=MAX_STEPS, initial=0, required=False,
                                              label="Second pass", help_text="Its steps; 0: as many as the first pass.")
    hr_denoising_strength = forms.FloatField(min_value=0.01, max_value=1, initial=0.7, required=False,
                                             label="Denoising strength", help_text="How much the second pass changes "
                                             "(A1111's default 0.7).", widget=forms.NumberInput(attrs={"step": 0.01}))

    # An X/Y/Z plot: an axis is a setting and its values (A1111's text: "10, 20", "1-5", "0-1 [5]").
    plot_x_type = forms.ChoiceField(choices=[(a, a) for a in PLOT_AXES], initial="Nothing", required=False,
                                    label="X type")
    plot_x_values = forms.CharField(max_length=1000, required=False, label="X values")
    plot_y_type = forms.ChoiceField(choices=[(a, a) for a in PLOT_AXES], initial="Nothing", required=False,
                                    label="Y type")
    plot_y_values = forms.CharField(max_length=1000, required=False, label="Y values")
    plot_z_type = forms.ChoiceField(choices=[(a, a) for a in PLOT_AXES], initial="Nothing", required=False,
                                    label="Z type")
    plot_z_values = forms.CharField(max_length=1000, required=False, label="Z values")

    # One ControlNet unit from the page (the APIs take several): its image is an upload, a gallery
    # image ("Use as control image"), or else the starting image.
    cn_model = ListedModelChoiceField(queryset=AddOn.objects.none(), required=False, empty_label="None",
                                      label="ControlNet model")
    cn_image = forms.FileField(required=False, label="Control image", widget=forms.ClearableFileInput(
        attrs={"accept": "image/png,image/jpeg,image/webp"}), help_text="Empty: the starting image.")
    cn_image_id = forms.CharField(required=False, widget=forms.HiddenInput)
    cn_module = forms.ChoiceField(choices=[(m, m) for m in MODULES], initial="canny", required=False,
                                  label="Preprocessor")
    cn_weight = forms.FloatField(min_value=0, max_value=2, initial=1, required=False, label="Control weight",
                                 widget=forms.NumberInput(attrs={"step": 0.05}))
    cn_guidance_start = forms.FloatField(min_value=0, max_value=1, initial=0, required=False,
                                         label="Starting control step", widget=forms.NumberInput(attrs={"step": 0.05}))
    cn_guidance_end = forms.FloatField(min_value=0, max_value=1, initial=1, required=False, label="Ending control step",
                                       widget=forms.NumberInput(attrs={"step": 0.05}))
    cn_control_mode = forms.TypedChoiceField(choices=list(enumerate(CONTROL_MODES)), coerce=int, initial=0,
                                             required=False, label="Control mode")
    cn_resize_mode = forms.TypedChoiceField(choices=list(enumerate(RESIZE_MODES)), coerce=int, initial=1,
                                            required=False, label="Control fit")
    cn_threshold_a = forms.FloatField(min_value=1, max_value=255, initial=100, required=False,
                                      label="Canny low threshold")
    cn_threshold_b = forms.FloatField(min_value=1, max_value=255, initial=200, required=False,
                                      label="Canny high threshold")

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Each list read once for the page, its kinds and families picked from it here.
        self.addons = list(addons_for(user))
        self.fields["cn_model"].list(addons_for(user, kind=AddOn.CONTROLNET), self.addons_of(AddOn.CONTROLNET))
        self.fields["hr_upscaler"].choices += [(name, name) for name in dict.fromkeys(
            a.name for a in self.addons_of(AddOn.UPSCALER))]
        self.fields["styles"].choices = [(s.name, s.name) for s in PromptStyle.objects.filter(owner=user)] if (
            user is not None and user.is_authenticated) else []
        self.fields["team"].choices, self.fields["team"].widget.balances = pool_choices(user)
        if not self.is_bound and (chosen := paying_team(user, None) if user is not None and user.is_authenticated else None):
            self.initial.setdefault("team", chosen.slug)
        self.fields["cn_model"].label_from_instance = lambda addon: f"{addon.title} · {addon.get_family_display()}"
        allowed = checkpoints_for(user)
        listed = list(allowed)  # the default first (Checkpoint's order), as default_checkpoint picks
        for name, families in (("checkpoint", TXT2IMG_FAMILIES), ("refiner", ("sdxl", "sdxl-refiner"))):
            self.fields[name].list(allowed.filter(family__in=families), [c for c in listed if c.family in families])
        self.fields["vae"].queryset = Vae.objects.filter(enabled=True)
        signed_in = user is not None and user.is_authenticated
        default = (listed[0] if listed else None) if signed_in else default_checkpoint(None)
        if default and not self.is_bound:  # the checkpoint's defaults, unless the link says otherwise
            self.initial = {"checkpoint": default, "width": default.default_width, "height": default.default_height,
                            "steps": default.default_steps, "guidance_scale": default.guidance, **self.initial}
        self.fields["num_images"] = forms.IntegerField(min_value=1, max_value=settings.SDWEB["MAX_IMAGES"],
                                                       initial=1, label="Images", help_text="Variants, seeds s, s+1, …")
        self.fields["batch_count"] = forms.IntegerField(
            min_value=1, max_value=MAX_BATCH_COUNT, initial=1, required=False, label="Batch count",
            help_text="Jobs one after another, each charged, seeds continuing (A1111's batch count).")

    def addons_of(self, kind: str) -> list:
        return [a for a in self.addons if a.kind == kind]

    def clean(self):
        data = super().clean()
        defaults = {"subseed": -1, "subseed_strength": 0.0, "denoising_strength": 0.75, "resize_mode": 0, "mask_blur": 4,
                    "inpainting_mask_invert": False, "inpainting_fill": 1, "inpaint_full_res_padding": 32, "hr_scale": 2.0,
                    "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "distilled_guidance_scale": 3.5}
        for field, default in defaults.items():
            if data.get(field) in (None, ""):
                data[field] = default
        for field, default in (("cn_weight", 1.0), ("cn_guidance_start", 0.0), ("cn_guidance_end", 1.0),
                               ("cn_control_mode", 0), ("cn_resize_mode", 1), ("cn_module", "canny"),
                               ("cn_threshold_a", -1), ("cn_threshold_b", -1)):
            if data.get(field) in (None, ""):
                data[field] = default
        plot = {axis: {"type": data.pop(f"plot_{axis}_type", "") or "Nothing", "values": data.pop(f"plot_{axis}_values", "")}
                for axis in "xyz"}
        if any(axis["type"] != "Nothing" for axis in plot.values()):
            data["plot"] = plot
        hires_strength = data.pop("hr_denoising_strength", None)
        if not data.get("enable_hr"):
            data.pop("hr_scale"), data.pop("hr_upscaler"), data.pop("hr_second_pass_steps")
        elif not (data.get("init_image") or data.get("init_image_id")):  # one strength per job, as in A1111
            data["denoising_strength"] = hires_strength or 0.7
        return data

    def clean_clip_skip(self):
        return self.cleaned_data["clip_skip"] or 1

    def clean_refiner_switch_at(self):
        return self.cleaned_data["refiner_switch_at"] or 0.8


class AddonUploadForm(forms.Form):
    kind = forms.ChoiceField(choices=[(AddOn.LORA, "LoRA"), (AddOn.EMBEDDING, "Embedding")])
    name = forms.CharField(max_length=100, help_text="How prompts call it: <lora:name:0.8>, or the embedding's word.")
    file = forms.FileField(label="File", widget=forms.FileInput(attrs={"accept": ".safetensors"}),
                           help_text=".safetensors only.")
    preview = forms.FileField(required=False, label="Preview picture", widget=forms.FileInput(
        attrs={"accept": "image/png,image/jpeg,image/webp"}), help_text="Optional: PNG, JPEG or WebP.")
