"""Styles: saved prompt fragments, applied as A1111 applies them, from the page, the REST API and
A1111 clients (webuiapi's `styles=[...]`)."""

import base64
import json

import pytest
from rest_framework.test import APIClient

from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.styles import style_save, styled
from generation.jobs.submit import Refused, job_submit
from generation.jobs.worker import job_run
from sdweb.shared.api_keys import api_key_create
from tests.support import form_data, params

pytestmark = pytest.mark.django_db


@pytest.fixture
def styles(alice):
    style_save(user=alice, name="cinematic", prompt="cinematic still of {prompt}, film grain",
               negative_prompt="cartoon")
    style_save(user=alice, name="detailed", prompt="highly detailed", negative_prompt="")


def test_a_style_wraps_the_prompt_where_it_says_and_is_added_after_it_otherwise(alice, carol, styles):
    assert styled(user=alice, names=["cinematic", "detailed"], prompt="a fox", negative_prompt="blur") == (
        "cinematic still of a fox, film grain, highly detailed", "blur, cartoon")
    assert styled(user=alice, names=["detailed"], prompt="", negative_prompt="") == ("highly detailed", "")
    with pytest.raises(ValueError, match="styles: you have no style called 'cinematic'"):
        styled(user=carol, names=["cinematic"], prompt="a fox", negative_prompt="")  # styles are each user's own


def test_a_job_runs_the_styled_prompts_and_an_unknown_style_is_refused_by_name(alice, checkpoint, styles):
    job = job_submit(user=alice, params=params(checkpoint, prompt="a fox", negative_prompt="", styles=["cinematic"]))
    assert (job.prompt, job.negative_prompt) == ("cinematic still of a fox, film grain", "cartoon")
    with pytest.raises(Refused, match="You have no style called 'noir'") as refusal:
        job_submit(user=alice, params=params(checkpoint, styles=["noir"]))
    assert refusal.value.field == "styles" and Job.objects.count() == 1


def test_the_page_saves_the_prompts_as_a_style_and_uses_it(client, alice, checkpoint):
    client.force_login(alice)
    back = client.post("/styles/save/", {**form_data(checkpoint, prompt="{prompt}, watercolour", negative_prompt="photo"),
                                         "style_name": "watercolour"})
    assert back.status_code == 302 and "prompt=%7Bprompt%7D%2C+watercolour" in back.url  # the form as it was
    page = client.get("/generate/").content.decode()
    assert 'name="styles" value="watercolour"' in page
    assert client.post("/generate/", form_data(checkpoint, prompt="a harbour", styles=["watercolour"])).status_code == 302
    assert Job.objects.get().prompt == "a harbour, watercolour"
    client.post("/styles/delete/", {"styles": ["watercolour"]})
    assert 'name="styles"' not in client.get("/generate/").content.decode()


def test_the_rest_api_and_a1111_clients_take_styles(alice, checkpoint, styles):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(user=alice, name='k')[1]}")
    made = api.post("/api/v1/jobs/", {"prompt": "a fox", "styles": ["detailed"], "width": 256, "height": 256,
                                      "steps": 2}, format="json")
    assert made.status_code == 201 and made.json()["prompt"] == "a fox, highly detailed"
    job_run(job_claim())
    a1111 = APIClient()
    a1111.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:alice-password-1").decode())
    assert a1111.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "cinematic", "prompt": "cinematic still of {prompt}, film grain", "negative_prompt": "cartoon"},
        {"name": "detailed", "prompt": "highly detailed", "negative_prompt": ""}]
    refused = a1111.post("/sdapi/v1/txt2img", {"prompt": "a fox", "styles": ["noir"], "steps": 2, "width": 256,
                                               "height": 256}, format="json")
    assert refused.status_code == 400 and "styles" in json.dumps(refused.json())
