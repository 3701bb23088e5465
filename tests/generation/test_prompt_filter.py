"""The prompt filter catches disguised spellings, refuses without charging, and audits the rule."""

import pytest

from generation.credits.models import CreditEntry
from generation.jobs.models import Job
from generation.jobs.submit import Refused, job_submit
from generation.provenance.models import BlockRule, PromptAudit
from generation.provenance.prompt_filter import blocked_by, normalise
from tests.support import params

DISGUISED = [
    "a NUDE figure",  # case
    "a ｎｕｄｅ figure",  # full-width letters (NFKC)
    "a n\u200bude figure",  # zero-width space
    "a n\u200du\u200dd\u200de figure",  # zero-width joiners
    "a nu\u00adde figure",  # soft hyphen
    "a n\u0336u\u0336d\u0336e\u0336 figure",  # combining strike-through
    "a \u202enude figure",  # right-to-left override
    "a nud\u0065\u0301 figure",  # a combining accent
    "a\tnude\nfigure",  # control characters as spaces
    "(nude:1.4) figure",  # A1111 weighting
    "a nud\u0435 figure",  # a Cyrillic e (a TR39 look-alike)
    "a n\u2800ude figure",  # the braille blank inside the word
    "a n\u00a0ude figure",  # a no-break space inside the word
    "a nu\u115fde figure",  # a Hangul filler
    "a nude\u00a0figure",  # a no-break space between words still separates them
]


@pytest.fixture
def rules(db, settings):
    settings.SDWEB = {**settings.SDWEB, "BLOCKLIST": ["nude", r"re:\bgore(fest)?\b"]}
    BlockRule.objects.create(pattern="bad word")


@pytest.mark.parametrize("prompt", DISGUISED)
def test_each_disguised_spelling_is_caught(rules, prompt):
    assert blocked_by(prompt) == "nude"


def test_regex_rules_phrases_from_the_admin_and_whole_words_only(rules):
    assert blocked_by("goreFEST tonight") == "re:\\bgore(fest)?\\b"
    assert blocked_by("a BAD\u200b  WORD here") == "bad word"
    assert blocked_by("a nudibranch on a reef, denuded hills, gorey") is None
    assert normalise("Ｆｕｌｌ\u200bwidth\u00a0 text") == "fullwidth text"


def test_a_blocked_prompt_is_refused_by_name_not_charged_and_audited_with_the_rule(rules, alice, checkpoint):
    with pytest.raises(Refused) as refused:
        job_submit(user=alice, params=params(checkpoint, prompt="portrait, n\u200bude"))
    assert refused.value.field == "prompt" and refused.value.code == "blocked"
    assert not Job.objects.exists() and not CreditEntry.objects.filter(kind="charge").exists()
    row = PromptAudit.objects.get()
    assert row.decision == "refused" and row.reason == "blocked by the prompt filter rule 'nude'"
    assert row.prompt == "portrait, n\u200bude"  # the audit keeps what was sent


def test_the_studio_form_shows_the_refusal_by_the_prompt(rules, client, alice, checkpoint):
    from tests.support import form_data

    client.force_login(alice)
    response = client.post("/generate/", form_data(checkpoint, prompt="ＮＵＤＥ study"))
    assert response.status_code == 400
    assert response.context["form"].errors["prompt"] == [
        "This prompt asks for something this site doesn't allow; change it and try again."]


def test_an_invalid_regex_is_refused_in_the_admin(client, admin):
    client.force_login(admin)
    response = client.post("/admin/generation/blockrule/add/", {"pattern": "(unclosed", "is_regex": "on",
                                                                 "enabled": "on"})
    assert "Not a valid regular expression" in response.content.decode()
    assert not BlockRule.objects.exists()
