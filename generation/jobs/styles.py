"""Styles: a user's saved prompt fragments, applied as A1111 applies them."""

from generation.jobs.models import PromptStyle
from generation.library.addons import printable

MAX_STYLES = 200


def styled(*, user, names, prompt: str, negative_prompt: str) -> tuple[str, str]:
    """The prompts with the named styles applied in order; ValueError("styles: why")."""
    if names in (None, "", []):
        return prompt, negative_prompt
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError("styles: a list of style names is required")
    found = {style.name: style for style in PromptStyle.objects.filter(owner=user, name__in=names)}
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"styles: you have no style called {missing[0]!r}")
    for name in names:
        prompt = _applied(found[name].prompt, prompt)
        negative_prompt = _applied(found[name].negative_prompt, negative_prompt)
    return prompt, negative_prompt


def _applied(style: str, text: str) -> str:
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return ", ".join(part for part in (text.strip(), style.strip()) if part)


def style_save(*, user, name: str, prompt: str, negative_prompt: str) -> PromptStyle:
    """Save (or replace) a style of the user's; ValueError("field: why")."""
    name = (name or "").strip()
    if not name or len(name) > 100 or not printable(name):
        raise ValueError("style_name: up to 100 visible characters")
    if not (prompt or "").strip() and not (negative_prompt or "").strip():
        raise ValueError("prompt: a style needs a prompt or a negative prompt to add")
    if len(prompt) > 2000 or len(negative_prompt) > 2000:
        raise ValueError("prompt: a style's prompts are at most 2000 characters each")
    if PromptStyle.objects.filter(owner=user).exclude(name=name).count() >= MAX_STYLES:
        raise ValueError(f"style_name: at most {MAX_STYLES} styles; delete one first")
    style, _ = PromptStyle.objects.update_or_create(owner=user, name=name, defaults={
        "prompt": prompt, "negative_prompt": negative_prompt})
    return style


def style_delete(*, user, name: str) -> bool:
    return PromptStyle.objects.filter(owner=user, name=name).delete()[0] > 0
