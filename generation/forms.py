from django import forms
from django.conf import settings

from generation.engine import SCHEDULERS
from generation.models import Checkpoint

SIZE_PRESETS = [(256, 256), (512, 512), (512, 768), (768, 512), (768, 768), (1024, 1024)]


class GenerateForm(forms.Form):
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=4000,
                             help_text="A1111 syntax works: (word:1.3), [word], BREAK.")
    negative_prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=4000, required=False)
    checkpoint = forms.ModelChoiceField(queryset=Checkpoint.objects.none(), empty_label=None)
    width = forms.IntegerField(min_value=256, initial=512, widget=forms.NumberInput(attrs={"step": 8}))
    height = forms.IntegerField(min_value=256, initial=512, widget=forms.NumberInput(attrs={"step": 8}))
    steps = forms.IntegerField(min_value=1, max_value=150, initial=20)
    guidance_scale = forms.FloatField(min_value=0, max_value=30, initial=7, label="Guidance scale")
    scheduler = forms.ChoiceField(choices=[(name, name) for name in SCHEDULERS], initial="Euler a")
    seed = forms.IntegerField(min_value=-1, max_value=2**32 - 1, initial=-1, help_text="-1 picks a random seed.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        checkpoints = Checkpoint.objects.filter(enabled=True)
        self.fields["checkpoint"].queryset = checkpoints
        default = checkpoints.order_by("-is_default", "name").first()
        if default and not self.is_bound:  # the checkpoint's defaults, unless the link says otherwise
            self.initial = {"checkpoint": default, "width": default.default_width, "height": default.default_height,
                            "steps": default.default_steps, **self.initial}
        self.fields["num_images"] = forms.IntegerField(min_value=1, max_value=settings.SDWEB["MAX_IMAGES"],
                                                       initial=1, label="Images", help_text="Variants, seeds s, s+1, …")
