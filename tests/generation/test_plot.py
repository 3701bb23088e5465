"""X/Y/Z plot: one job, one charge for its cells, a labelled grid image in the gallery linked to
its cells; in the REST API and A1111's script_args."""

import base64
import io
import json

import pytest
from PIL import Image as PILImage

from generation.credits.ledger import quote_cost
from generation.credits.models import CreditEntry
from generation.engine.metadata import parse_parameters
from generation.engine.plot import axis_values
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.worker import job_run
from tests.support import stored_picture

pytestmark = pytest.mark.django_db


def test_axis_values_read_lists_and_ranges_as_a1111_does():
    assert axis_values("Steps", "10, 20,30") == [10, 20, 30]
    assert axis_values("Seed", "1-4") == [1, 2, 3, 4]
    assert axis_values("Steps", "10-30 (+10)") == [10, 20, 30]
    assert axis_values("CFG Scale", "3-7 [3]") == [3.0, 5.0, 7.0]
    assert axis_values("Prompt S/R", "fox, wolf, red fox") == ["fox", "wolf", "red fox"]
    for axis, text in (("Steps", "many"), ("Steps", "5-1 (+1)"), ("CFG Scale", " , ")):
        with pytest.raises(ValueError):
            axis_values(axis, text)


def test_a_plot_is_one_job_charged_per_cell_with_a_labelled_grid_linked_to_its_cells(api, alice, client):
    body = {"prompt": "a red fox", "steps": 2, "width": 256, "height": 256, "seed": 7,
            "plot": {"x": {"type": "Steps", "values": "2, 3"}, "y": {"type": "Prompt S/R", "values": "fox, wolf"}}}
    response = api.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 201, response.data
    job = Job.objects.get()
    assert job.cost == quote_cost(width=0, height=0, steps=0, num_images=1, passes=[(256, 256, s) for s in (2, 3, 2, 3)])
    assert CreditEntry.objects.filter(job=job, kind="charge").count() == 1
    assert response.data["plot"] == [{"axis": "x", "type": "Steps", "values": [2, 3]},
                                     {"axis": "y", "type": "Prompt S/R", "values": ["fox", "wolf"]}]
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    images = list(job.images.order_by("index"))
    cells = [parse_parameters(stored_picture(image).info["parameters"]) for image in images[:4]]
    assert [(c["prompt"], c["steps"], c["seed"]) for c in cells] == [
        ("a red fox", 2, 7), ("a red fox", 3, 7), ("a red wolf", 2, 7), ("a red wolf", 3, 7)]
    grid = images[4]
    assert grid.width > 2 * 256 and grid.height > 2 * 256  # two by two, with room for the labels
    text = parse_parameters(stored_picture(grid).info["parameters"])
    assert (text["Script"], text["X Type"], text["X Values"], text["Y Type"], text["Y Values"]) == (
        "X/Y/Z plot", "Steps", "2, 3", "Prompt S/R", "fox, wolf")
    client.force_login(alice)
    page = client.get(f"/images/{grid.hex_id}/").content.decode()
    for image, name in zip(images[:4], ("Steps: 2 · fox", "Steps: 3 · fox", "Steps: 2 · wolf", "Steps: 3 · wolf")):
        assert f'href="/images/{image.hex_id}/"' in page and name in page
    assert f'href="/images/{grid.hex_id}/"' in client.get(f"/images/{images[1].hex_id}/").content.decode()


@pytest.mark.parametrize("plot, field", [
    ({"x": {"type": "Sigma Churn", "values": "0, 1"}}, "plot.x.type"),
    ({"x": {"type": 13, "values": "0, 1"}}, "plot.x.type"),
    ({"x": {"type": "Steps", "values": "2-40"}}, "plot"),  # 39 cells: more than 25
    ({"x": {"type": "Prompt S/R", "values": "cat, dog"}}, "plot.x.values"),
    ({"x": {"type": "Steps", "values": "2, 999"}}, "plot"),
    ({"y": {"type": "Checkpoint name", "values": "sdweb-test-tiny, nope"}}, "plot"),
    ({"x": {"type": "Nothing"}}, "plot.x.type"),
])
def test_a_bad_plot_is_refused_naming_the_axis_and_charges_nothing(api, alice, plot, field):
    response = api.post("/api/v1/jobs/", {"prompt": "a red fox", "steps": 2, "width": 256, "height": 256,
                                          "plot": plot}, format="json")
    assert response.status_code == 400 and field in response.data, response.data
    assert not Job.objects.exists() and not CreditEntry.objects.filter(kind="charge").exists()


@pytest.mark.django_db(transaction=True)
def test_a1111s_xyz_script_args_give_the_grid_first_and_the_cells_when_asked(alice, checkpoint, worker):
    from rest_framework.test import APIClient

    a1111 = APIClient()
    a1111.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:alice-password-1").decode())
    body = {"prompt": "a lighthouse", "steps": 2, "width": 256, "height": 256, "batch_size": 1, "seed": 3,
            "script_name": "x/y/z plot",
            "script_args": [6, "4, 9", [], 0, "", [], 0, "", [], True, True, False, False, 0, False, False]}
    response = a1111.post("/sdapi/v1/txt2img", body, format="json")
    assert response.status_code == 200, response.data
    info = json.loads(response.data["info"])
    pngs = [PILImage.open(io.BytesIO(base64.b64decode(b))) for b in response.data["images"]]
    assert len(pngs) == 3 and pngs[0].width == 2 * 256 and pngs[0].height > 256  # the labelled grid, then the cells
    assert [parse_parameters(png.info["parameters"])["cfg_scale"] for png in pngs[1:]] == [4.0, 9.0]
    assert "Script: X/Y/Z plot, X Type: CFG Scale" in info["infotexts"][0]
    body["script_args"][10] = False  # include_lone_images off: the grid alone, as A1111 answers
    assert len(a1111.post("/sdapi/v1/txt2img", body, format="json").data["images"]) == 1
    refused = a1111.post("/sdapi/v1/txt2img", {**body, "script_name": "prompt matrix"}, format="json")
    assert refused.status_code == 400 and refused.data["detail"].startswith("script_name")


def test_the_page_makes_a_plot_and_names_a_bad_axis_beside_its_field(client, alice, checkpoint):
    from tests.support import form_data

    client.force_login(alice)
    bad = client.post("/generate/", form_data(checkpoint, steps=2, num_images=1, plot_x_type="Steps", plot_x_values="2, lots"))
    assert bad.status_code == 400 and "plot_x_values" in bad.context["form"].errors
    assert not Job.objects.exists()
    client.post("/generate/", form_data(checkpoint, steps=2, num_images=1, plot_x_type="CFG Scale", plot_x_values="3, 6",
                                        plot_y_type="Sampler", plot_y_values="Euler a, DPM++ 2M"))
    job = Job.objects.get()
    assert [a["type"] for a in job.plot["axes"]] == ["CFG Scale", "Sampler"] and job.num_images == 5
    assert [c["label"] for c in job.plot["cells"]] == ["CFG Scale: 3 · Euler a", "CFG Scale: 6 · Euler a",
                                                       "CFG Scale: 3 · DPM++ 2M", "CFG Scale: 6 · DPM++ 2M"]
    page = client.get("/generate/").content.decode()  # the next job is no plot unless asked again
    assert '<option value="Nothing" selected>' in page.split('name="plot_x_type"')[1]


def test_batch_count_queues_jobs_with_continuing_seeds_and_stops_at_a_refusal(client, alice, checkpoint):
    from generation.credits.ledger import quote_cost
    from generation.credits.models import CreditAccount
    from tests.support import form_data

    client.force_login(alice)
    client.post("/generate/", form_data(checkpoint, steps=2, seed=100, num_images=2, batch_count=3))
    assert list(Job.objects.order_by("created_at").values_list("seed", "num_images")) == [(100, 2), (102, 2), (104, 2)]
    assert CreditEntry.objects.filter(kind="charge").count() == 3
    one = quote_cost(width=256, height=256, steps=2, num_images=2)
    CreditAccount.objects.filter(user=alice).update(balance=one * 2)  # room for two of the next four
    response = client.post("/generate/", form_data(checkpoint, steps=2, seed=7, num_images=2, batch_count=4),
                           follow=True)
    assert Job.objects.count() == 5
    assert "2 of 4 jobs queued; the next was refused: This costs" in response.content.decode()
