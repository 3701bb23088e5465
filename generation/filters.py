"""The prompt filter: staff's block rules (admin) and SDWEB_BLOCKLIST, matched on a normal form
of the prompt so that disguised spellings match too."""

import logging
import re
import unicodedata

from django.conf import settings

from generation.models import BlockRule

log = logging.getLogger(__name__)
DROPPED = {"Cc", "Cf", "Mn", "Me"}  # control, format (zero-width, soft hyphen, bidi), combining marks


def normalise(text: str) -> str:
    """NFKC (full-width and other compatibility forms), case-folded, without control and
    zero-width characters or combining marks, whitespace runs as one space."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    text = "".join(c for c in text if unicodedata.category(c) not in DROPPED or c in "\t\n\r")
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text))


def rules() -> list[tuple[str, re.Pattern]]:
    """(name, compiled) for every enabled rule: words and phrases match whole words."""
    sources = [(r.pattern, r.is_regex) for r in BlockRule.objects.filter(enabled=True)]
    sources += [(rule[3:], True) if rule.startswith("re:") else (rule, False) for rule in settings.SDWEB["BLOCKLIST"]]
    compiled = []
    for pattern, is_regex in sources:
        try:
            regex = re.compile(pattern if is_regex else rf"(?<!\w){re.escape(normalise(pattern))}(?!\w)", re.IGNORECASE)
        except re.error as error:  # the admin refuses these; a bad SDWEB_BLOCKLIST entry is skipped, loudly
            log.error("prompt filter rule %r is not a valid regular expression: %s", pattern, error)
            continue
        compiled.append((("re:" if is_regex else "") + pattern, regex))
    return compiled


def blocked_by(prompt: str) -> str | None:
    """The first rule the prompt matches, or None."""
    text = normalise(prompt)
    return next((name for name, regex in rules() if regex.search(text)), None)
