"""The add-on library in the studio: the operator's folders scanned, users' private uploads
(checked, capped, never shared unless staff publish them), and LoRAs, embeddings and ControlNet
units through submit, charge, run, audit and trace, in the page and in A1111's and the ControlNet
extension's API shapes."""

import base64
import hashlib
import io
import json

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from PIL import ImageDraw
from rest_framework.test import APIClient

from generation.accounts.models import StaffAction
from generation.engine.metadata import parse_parameters
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import Refused, job_submit
from generation.jobs.worker import job_run
from generation.library.addons import addon_upload, addons_scan
from generation.library.checkpoints import checkpoints_scan
from generation.library.models import AddOn
from generation.provenance.models import PromptAudit
from tests.support import assert_ledger_balanced, form_data, params


def square() -> PILImage.Image:
    picture = PILImage.new("RGB", (256, 256), "white")
    ImageDraw.Draw(picture).rectangle((64, 64, 192, 192), fill="black")
    return picture


def png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def finished(job) -> Job:
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job


def infotext(job) -> dict:
    image = job.images.first()
    with default_storage.open(image.png.name, "rb") as file:
        return parse_parameters(PILImage.open(file).info["parameters"])


def pixels(job) -> np.ndarray:
    with default_storage.open(job.images.first().png.name, "rb") as file:
        return np.asarray(PILImage.open(file).convert("RGB"), dtype=np.int16)


def upload(path, name=None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def test_the_scan_registers_the_add_on_folders_as_a1111_lays_them_out(db, settings, addon_files, tmp_path):
    folders = {"LORA_DIR": tmp_path / "Lora", "EMBEDDINGS_DIR": tmp_path / "embeddings",
               "CONTROLNET_DIR": tmp_path / "ControlNet"}
    settings.SDWEB = {**settings.SDWEB, **folders, "MODELS_DIR": tmp_path}
    for folder in folders.values():
        folder.mkdir()
    (folders["LORA_DIR"] / "style.safetensors").write_bytes(addon_files["lora"].read_bytes())
    PILImage.new("RGB", (64, 64), "red").save(folders["LORA_DIR"] / "style.preview.png")
    (folders["EMBEDDINGS_DIR"] / "badhands.safetensors").write_bytes(addon_files["embedding"].read_bytes())
    (folders["CONTROLNET_DIR"] / "canny.safetensors").write_bytes(addon_files["controlnet"].read_bytes())
    (folders["LORA_DIR"] / "not-a-lora.safetensors").write_bytes(addon_files["embedding"].read_bytes())

    found, skipped = addons_scan()
    assert {(a.kind, a.name, a.family) for a in found} == {
        ("lora", "style", "sd1"), ("embedding", "badhands", "sd1"), ("controlnet", "canny", "sd1")}
    style = AddOn.objects.get(name="style")
    assert style.owner is None and style.short_hash == style.sha256[:12] and len(style.sha256) == 64
    assert style.trigger_words == "tinystyle, noise"  # kohya's ss_tag_frequency, most frequent first
    assert style.preview and default_storage.exists(style.preview)
    assert "is not a LoRA" in skipped["Lora/not-a-lora.safetensors"]
    assert checkpoints_scan() == ([], {})  # the add-on folders inside the models folder are not checkpoints

    (folders["LORA_DIR"] / "style.safetensors").unlink()
    addons_scan()
    assert not AddOn.objects.get(name="style").enabled


def test_a_diffusers_controlnet_folder_works_after_a_scan_with_no_admin_edits(alice, checkpoint, library, settings,
                                                                             addon_files, tmp_path):
    folder = tmp_path / "ControlNet" / "canny-v1.1"  # as a diffusers ControlNet is downloaded
    folder.mkdir(parents=True)
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(addon_files["controlnet"].read_bytes())
    (folder / "config.json").write_bytes((addon_files["controlnet_config"] / "config.json").read_bytes())
    settings.SDWEB = {**settings.SDWEB, "CONTROLNET_DIR": tmp_path / "ControlNet"}
    found, skipped = addons_scan()
    assert [(a.name, a.family, a.source) for a in found if a.kind == "controlnet"] == [("canny-v1.1", "sd1", str(folder))]
    jobs = [finished(job_submit(user=alice, params=params(checkpoint, num_images=1, controlnet=[
        {"image": png(square()), "model": name, "module": "canny"}]))) for name in ("canny-v1.1", "tiny-canny")]
    plain = finished(job_submit(user=alice, params=params(checkpoint, num_images=1)))
    coarse = [np.asarray(PILImage.fromarray(pixels(job).astype(np.uint8)).resize((16, 16), PILImage.BOX), dtype=float)
              for job in (*jobs, plain)]  # each image's own watermark averaged out
    assert np.abs(coarse[0] - coarse[1]).mean() < 1 < np.abs(coarse[0] - coarse[2]).mean()  # measured 0.28 and 6.0


def test_a_lora_and_a_negative_embedding_make_the_image_a1111_reads_back_and_the_audit_names_them(
        alice, checkpoint, library, client):
    plain = finished(job_submit(user=alice, params=params(checkpoint, num_images=1, negative_prompt="blurry")))
    job = finished(job_submit(user=alice, params=params(checkpoint, num_images=1,
                                                        prompt="a lighthouse at dusk <lora:tiny-style:0.7>",
                                                        negative_prompt="blurry, tinyneg")))
    assert np.abs(pixels(job) - pixels(plain)).mean() > 1
    assert job.cost == plain.cost  # merged LoRAs and embeddings cost nothing per step
    lora, embedding = library["lora"], library["embedding"]
    assert [(a["kind"], a["name"], a["sha256"]) for a in job.addons] == [
        ("lora", "tiny-style", lora.sha256), ("embedding", "tinyneg", embedding.sha256)]
    info = infotext(job)
    assert info["prompt"] == "a lighthouse at dusk <lora:tiny-style:0.7>"
    assert info["Lora hashes"] == f"tiny-style: {lora.sha256[:12]}"
    assert info["TI hashes"] == f"tinyneg: {embedding.sha256[:12]}"
    audit = PromptAudit.objects.get(job_id=job.pk)
    assert audit.params["addons"] == [{"kind": "lora", "name": "tiny-style", "sha256": lora.sha256},
                                      {"kind": "embedding", "name": "tinyneg", "sha256": embedding.sha256}]
    client.force_login(alice)
    page = client.get(f"/images/{job.images.first().hex_id}/").content.decode()
    assert "tiny-style" in page and lora.sha256[:12] in page and "tinyneg" in page


@pytest.mark.parametrize("prompt, negative, field, message", [
    ("a cat <lora:nowhere:1>", "", "prompt", "No LoRA called 'nowhere'"),
    ("a cat <lora:tiny-style:much>", "", "prompt", "a LoRA's weights are numbers"),
    ("a cat <lora:tiny-style:9>", "", "prompt", "weight must be a number from -4 to 4"),
    ("a cat", "<lora:tiny-style:1>", "negative_prompt", "LoRA tags work in the prompt"),
])
def test_a_bad_lora_tag_is_refused_naming_the_field_and_charges_nothing(alice, checkpoint, library, prompt, negative,
                                                                         field, message):
    with pytest.raises(Refused, match=message) as refusal:
        job_submit(user=alice, params=params(checkpoint, prompt=prompt, negative_prompt=negative))
    assert refusal.value.field == field
    assert not Job.objects.exists() and alice.credits.balance == 100
    assert PromptAudit.objects.get().decision == "refused"
    assert_ledger_balanced()


def test_an_add_on_of_another_family_is_refused_naming_both(alice, checkpoint, library, tiny_families, tmp_path):
    from generation.engine.loading import load_pipeline
    from generation.engine.testmodel import make_tiny_addons

    xl = make_tiny_addons(load_pipeline(str(tiny_families["sdxl"]["folder"])).pipe, tmp_path)
    addon_upload(user=alice, kind="lora", name="xl-style", file=upload(xl["lora"]))
    with pytest.raises(Refused, match="LoRA 'xl-style' is for SDXL; checkpoint 'sdweb-test-tiny' is SD 1.x"):
        job_submit(user=alice, params=params(checkpoint, prompt="a cat <lora:xl-style:1>"))
    # An embedding of another family named in a prompt is read as words, as A1111 skips it.
    addon_upload(user=alice, kind="embedding", name="xlneg", file=upload(xl["embedding"]))
    job = job_submit(user=alice, params=params(checkpoint, negative_prompt="xlneg"))
    assert job.addons == []


def test_an_upload_is_private_until_staff_publish_it(alice, carol, admin, checkpoint, addon_files, client):
    client.force_login(alice)
    response = client.post("/addons/", {"kind": "lora", "name": "my-style", "file": upload(addon_files["lora"]),
                                        "preview": SimpleUploadedFile("p.png", png(square()))}, follow=True)
    assert "only you can use it" in response.content.decode()
    mine = AddOn.objects.get(name="my-style")
    assert (mine.owner, mine.published, mine.stored, mine.family) == (alice, False, True, "sd1")
    assert default_storage.exists(mine.source) and mine.source == f"addons/{mine.sha256}.safetensors"
    assert finished(job_submit(user=alice, params=params(checkpoint, num_images=1, prompt="x <lora:my-style:1>")))
    with pytest.raises(Refused, match="No LoRA called 'my-style'"):
        job_submit(user=carol, params=params(checkpoint, prompt="x <lora:my-style:1>"))
    client.force_login(carol)
    assert "my-style" not in client.get("/addons/").content.decode()
    assert client.get(f"/addons/{mine.pk}/preview.png").status_code == 404

    client.force_login(admin)
    client.post("/admin/generation/addon/", {"action": "publish", "_selected_action": [mine.pk]})
    assert AddOn.objects.get(pk=mine.pk).published
    assert StaffAction.objects.get(action="publish add-on").target == f"LoRA my-style [{mine.short_hash}]"
    assert job_submit(user=carol, params=params(checkpoint, prompt="x <lora:my-style:1>")).addons[0]["name"] == "my-style"
    client.force_login(carol)
    assert client.get(f"/addons/{mine.pk}/preview.png").status_code == 200


@pytest.mark.parametrize("kind, name, file, message", [
    ("lora", "x", "pickle", "only .safetensors files are accepted"),
    ("lora", "x", "embedding", "the file is not a LoRA"),
    ("lora", "x", "truncated", "the file is truncated or damaged"),
    ("lora", "x", "lying", "does not match its declared type and shape"),
    ("embedding", "two words", "embedding", "can't name a Embedding"),
    ("lora", "a<b", "lora", "without < > or :"),
    ("controlnet", "x", "controlnet", "upload a LoRA or an embedding"),
])
def test_a_hostile_or_wrong_upload_is_refused_naming_what_is_wrong(alice, addon_files, kind, name, file, message):
    data = addon_files["embedding" if file == "embedding" else "controlnet" if file == "controlnet" else "lora"]
    body = data.read_bytes()
    if file == "truncated":
        body = body[:-10]
    if file == "lying":  # the header says F32 where the bytes are F16-sized
        header_length = int.from_bytes(body[:8], "little")
        header = body[8:8 + header_length].replace(b'"F32"', b'"F16"', 1)
        body = body[:8] + header + body[8 + header_length:]
    before = stored_addon_files()
    with pytest.raises(ValueError, match=message):
        addon_upload(user=alice, kind=kind, name=name, file=SimpleUploadedFile(
            "model.ckpt" if file == "pickle" else "model.safetensors", body))
    assert not AddOn.objects.exists() and stored_addon_files() == before


def stored_addon_files() -> set:
    return set(default_storage.listdir("addons")[1]) if default_storage.exists("addons") else set()


def test_the_size_cap_and_the_quota_are_enforced_before_anything_is_kept(alice, settings, addon_files):
    size = addon_files["lora"].stat().st_size
    settings.SDWEB = {**settings.SDWEB, "ADDON_QUOTA_BYTES": int(size * 1.5)}
    addon_upload(user=alice, kind="lora", name="one", file=upload(addon_files["lora"]))
    with pytest.raises(ValueError, match="your quota is"):
        addon_upload(user=alice, kind="lora", name="two", file=upload(addon_files["lora"]))
    settings.SDWEB = {**settings.SDWEB, "ADDON_MAX_BYTES": size - 1}
    with pytest.raises(ValueError, match="at most"):
        addon_upload(user=alice, kind="lora", name="three", file=upload(addon_files["lora"]))
    assert list(AddOn.objects.values_list("name", flat=True)) == ["one"]


def test_deleting_an_upload_or_the_account_removes_its_file(alice, client, addon_files):
    mine = addon_upload(user=alice, kind="lora", name="mine", file=upload(addon_files["lora"]))
    client.force_login(alice)
    client.post(f"/addons/{mine.pk}/delete/")
    assert not AddOn.objects.exists() and not default_storage.exists(mine.source)
    again = addon_upload(user=alice, kind="embedding", name="mine", file=upload(addon_files["embedding"]))
    client.post("/account/delete/", {"password": "alice-password-1", "confirm": "alice"})
    assert not AddOn.objects.exists() and not default_storage.exists(again.source)


def test_a_controlnet_unit_from_a_gallery_image_guides_the_job_and_its_variants(alice, checkpoint, library, make_job,
                                                                               client):
    control = make_job(alice, num_images=1).images.first()
    plain = finished(job_submit(user=alice, params=params(checkpoint, num_images=1)))
    unit = {"image": control, "model": "tiny-canny", "module": "canny", "weight": 0.9, "control_mode": "Balanced"}
    job = finished(job_submit(user=alice, params=params(checkpoint, num_images=1, controlnet=[unit])))
    assert np.abs(pixels(job) - pixels(plain)).mean() > 1
    record = job.addons[0]
    assert (record["kind"], record["name"], record["module"], record["weight"]) == ("controlnet", "tiny-canny",
                                                                                   "canny", 0.9)
    with default_storage.open(record["image"]) as file:  # named by what it holds
        assert record["image"] == f"inputs/control-{hashlib.sha256(file.read()).hexdigest()}.png"
    assert infotext(job)["ControlNet 0"].startswith(
        f"Module: canny, Model: tiny-canny [{library['controlnet'].sha256[:8]}], Weight: 0.9")
    assert PromptAudit.objects.get(job_id=job.pk).params["controlnet_sha256"] == [f"image {control.hex_id}"]

    client.force_login(alice)
    response = client.post(f"/images/{job.images.first().hex_id}/variants/")
    variant = Job.objects.get(pk=response.url.rstrip("/").split("/")[-1])
    assert [a["name"] for a in variant.addons] == ["tiny-canny"] and variant.addons[0]["weight"] == 0.9
    with default_storage.open(job.images.first().png.name, "rb") as file:  # PNG Info reads the unit back
        read = client.post("/generate/png-info/", {"image": SimpleUploadedFile("x.png", file.read())}).json()
    assert {k: read["fields"][k] for k in ("cn_model", "cn_module", "cn_weight")} == {
        "cn_model": library["controlnet"].pk, "cn_module": "canny", "cn_weight": 0.9}
    # A ControlNet works at every step, about half a UNet's work: 50% more per unit.
    size = {"width": 512, "height": 512, "steps": 30, "num_images": 1}
    assert [job_submit(user=alice, params=params(checkpoint, **size, controlnet=units)).cost
            for units in ([], [unit], [unit, unit])] == [1, 2, 2]


def test_a_bad_controlnet_unit_is_refused_by_name(alice, carol, checkpoint, library, make_job):
    private = make_job(alice, num_images=1).images.first()
    for unit, field, message in (
            ({"image": private, "model": "tiny-canny"}, "controlnet[0].image", "give the id of an image of yours"),
            ({"image": png(square()), "model": "depth"}, "controlnet[0].model", "No ControlNet called 'depth'"),
            ({"image": png(square()), "model": "tiny-canny", "control_mode": "Loud"}, "controlnet[0].control_mode",
             "One of Balanced"),
            ({"image": b"GIF89a", "model": "tiny-canny"}, "controlnet[0].image", "PNG, JPEG or WebP")):
        with pytest.raises(Refused, match=message) as refusal:
            job_submit(user=carol, params=params(checkpoint, controlnet=[unit]))
        assert refusal.value.field == field
    assert not Job.objects.filter(user=carol).exists() and carol.credits.balance == 100


def test_the_page_previews_the_map_and_submits_its_controlnet_unit(alice, checkpoint, library, client):
    client.force_login(alice)
    answer = client.post("/generate/control-map/", {"cn_module": "canny", "cn_image": SimpleUploadedFile(
        "c.png", png(square()))}).json()
    picture = PILImage.open(io.BytesIO(base64.b64decode(answer["image"].partition(",")[2])))
    assert np.asarray(picture.convert("L")).max() == 255  # the square's edges
    assert client.post("/generate/control-map/", {"cn_module": "canny"}).json() == {
        "error": "Choose a control image (or a starting image) first"}
    response = client.post("/generate/", form_data(checkpoint, num_images=1, cn_model=library["controlnet"].pk,
                                                   cn_module="invert", cn_image=SimpleUploadedFile("c.png", png(square()))))
    assert response.status_code == 302, response.context["form"].errors
    job = Job.objects.get()
    assert (job.addons[0]["module"], job.addons[0]["resize_mode"]) == ("invert", 1)


def test_the_studio_page_reads_the_checkpoints_and_the_add_ons_once_each(alice, checkpoint, library, client):
    """Django's model choice fields queried again each time the page rendered them or asked whether
    they had any choices (the ControlNet list: twice a page); the checkpoint, refiner and default
    checkpoint, and each kind of add-on, were a query each."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(alice)
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/generate/").content.decode()
    assert f'<option value="{library["controlnet"].pk}">' in page and f'<option value="{checkpoint.pk}" selected>' in page
    assert '<option value="tiny-style"' in page and '<option value="tinyneg"' in page  # the LoRA, the embedding
    reads = [q["sql"] for q in queries.captured_queries]
    assert sum(q.startswith('SELECT "generation_addon"."id"') for q in reads) == 1
    assert sum(q.startswith('SELECT "generation_checkpoint"."id"') for q in reads) == 1


@pytest.fixture
def a1111(alice, checkpoint):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:alice-password-1").decode())
    return client


def test_a1111_lists_loras_and_embeddings_as_a1111_does_without_server_paths(a1111, alice, library, addon_files,
                                                                             tiny_families, tmp_path):
    loras = a1111.get("/sdapi/v1/loras").json()
    assert loras == [{"name": "tiny-style", "alias": "tiny-style", "path": "tiny-style.safetensors",
                      "metadata": {"sshs_model_hash": library["lora"].sha256, "ss_base_model_version": "sd1",
                                   "trigger_words": "tinystyle, noise"}}]
    from generation.engine.loading import load_pipeline
    from generation.engine.testmodel import make_tiny_addons

    xl = make_tiny_addons(load_pipeline(str(tiny_families["sdxl"]["folder"])).pipe, tmp_path)
    addon_upload(user=alice, kind="embedding", name="xlneg", file=upload(xl["embedding"]))
    embeddings = a1111.get("/sdapi/v1/embeddings").json()
    assert list(embeddings["loaded"]) == ["tinyneg"] and list(embeddings["skipped"]) == ["xlneg"]
    assert a1111.post("/sdapi/v1/refresh-loras").status_code == 200
    assert not StaffAction.objects.exists()  # alice may not add add-ons: nothing is scanned
    assert str(addon_files["lora"].parent) not in json.dumps(loras)


def test_staff_who_may_add_add_ons_rescan_through_refresh_loras(admin):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"admin:admin-password-1").decode())
    assert client.post("/sdapi/v1/refresh-loras").status_code == 200
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert sorted(StaffAction.objects.values_list("action", flat=True)) == ["scan add-ons", "scan models"]


def test_the_controlnet_extension_api_answers_as_the_extension_does(a1111, library):
    assert a1111.get("/controlnet/model_list").json() == {"model_list": [library["controlnet"].title]}
    modules = a1111.get("/controlnet/module_list").json()
    assert modules["module_list"] == ["none", "canny", "lineart_standard", "invert"]
    detected = a1111.post("/controlnet/detect", {"controlnet_module": "canny", "controlnet_input_images": [
        base64.b64encode(png(square())).decode()], "controlnet_processor_res": 256}, format="json").json()
    assert detected["info"] == "Success"
    edges = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(detected["images"][0]))).convert("L"))
    assert edges.shape == (256, 256) and edges[128, 60:70].max() == 255 and edges[:, :50].max() == 0
    bad = a1111.post("/controlnet/detect", {"controlnet_module": "openpose", "controlnet_input_images": [
        base64.b64encode(png(square())).decode()]}, format="json")
    assert bad.status_code == 422 and "controlnet_module must be one of" in bad.json()["detail"]
    assert {"controlnet", "controlnet m2m", "x/y/z plot"} == set(a1111.get("/sdapi/v1/scripts").json()["txt2img"])


def unit_as_webuiapi_sends_it(**overrides):
    """webuiapi.ControlNetUnit(...).to_dict() with its default arguments."""
    return {"image": base64.b64encode(png(square())).decode(), "mask": None, "module": "canny",
            "model": "tiny-canny [00000000]", "weight": 1.0, "resize_mode": "Resize and Fill", "low_vram": False,
            "processor_res": 512, "threshold_a": 64, "threshold_b": 64, "guidance_start": 0.0, "guidance_end": 1.0,
            "control_mode": "Balanced", "pixel_perfect": False, "hr_option": "Both", "enabled": True, **overrides}


@pytest.mark.django_db(transaction=True)
def test_a1111_txt2img_takes_controlnet_units_loras_and_embeddings(a1111, library, worker):
    payload = {"prompt": "a red door <lora:tiny-style:0.5>", "negative_prompt": "tinyneg", "steps": 2, "width": 256,
               "height": 256, "seed": 3, "alwayson_scripts": {"ControlNet": {"args": [
                   unit_as_webuiapi_sends_it(), unit_as_webuiapi_sends_it(enabled=False)]}}}
    response = a1111.post("/sdapi/v1/txt2img", payload, format="json")
    assert response.status_code == 200, response.json()
    info = parse_parameters(json.loads(response.json()["info"])["infotexts"][0])
    assert info["ControlNet 0"].startswith("Module: canny, Model: tiny-canny [") and "ControlNet 1" not in info
    assert "Resize Mode: Resize and Fill" in info["ControlNet 0"] and "Threshold A: 64" in info["ControlNet 0"]
    assert "tiny-style" in info["Lora hashes"] and "tinyneg" in info["TI hashes"]


@pytest.mark.parametrize("scripts, message", [
    ({"controlnet": {"args": [unit_as_webuiapi_sends_it(model="nothing")]}},
     "alwayson_scripts.controlnet.args[0].model: No ControlNet called 'nothing'"),
    ({"controlnet": {"args": [unit_as_webuiapi_sends_it(image={"image": "x", "mask": "y"})]}},
     "ControlNet masks are not supported"),
    ({"controlnet": {"args": [unit_as_webuiapi_sends_it(image="")]}}, "txt2img has no starting image"),
    ({"ADetailer": {"args": [True, {"ad_model": "face_yolov8n.pt"}]}}, "alwayson_scripts.ADetailer: this script is not"),
])
def test_a1111_refuses_what_it_cant_run_by_name(a1111, library, scripts, message):
    response = a1111.post("/sdapi/v1/txt2img", {"prompt": "x", "alwayson_scripts": scripts}, format="json")
    assert response.status_code == 400 and message in response.json()["detail"]
    assert not Job.objects.exists()


def test_the_rest_api_lists_add_ons_and_takes_controlnet_units_as_json(api, alice, library, addon_files):
    addon_upload(user=alice, kind="lora", name="mine", file=upload(addon_files["lora"]))
    listed = api.get("/api/v1/addons/?kind=lora").json()
    assert [(a["name"], a["kind"], a["family"], a["yours"]) for a in listed] == [
        ("mine", "lora", "sd1", True), ("tiny-style", "lora", "sd1", False)]
    unit = {"image": "data:image/png;base64," + base64.b64encode(png(square())).decode(), "model": "tiny-canny",
            "module": "canny", "control_mode": "My prompt is more important"}
    response = api.post("/api/v1/jobs/", {"prompt": "a door <lora:mine:0.6>", "steps": 2, "width": 256,
                                          "height": 256, "controlnet": [unit]}, format="json")
    assert response.status_code == 201, response.json()
    addons = response.json()["addons"]
    assert [(a["kind"], a["name"]) for a in addons] == [("lora", "mine"), ("controlnet", "tiny-canny")]
    assert addons[1]["control_mode"] == 1 and "image" not in addons[1] and len(addons[1]["image_sha256"]) == 64
    bad = api.post("/api/v1/jobs/", {"prompt": "a door", "controlnet": [{**unit, "image": "%%%"}]}, format="json")
    assert bad.status_code == 400 and "not valid base64" in json.dumps(bad.json())
    quote = api.get("/api/v1/quote/?width=512&height=512&steps=30&num_images=1&controlnet_units=2").json()
    assert quote["cost"] == 2


def test_the_admin_scan_button_needs_its_permission_and_is_a_staff_action(admin, db, client, settings, tmp_path,
                                                                         addon_files):
    from django.contrib.auth.models import Permission, User

    settings.SDWEB = {**settings.SDWEB, "LORA_DIR": tmp_path}
    (tmp_path / "style.safetensors").write_bytes(addon_files["lora"].read_bytes())
    viewer = User.objects.create_user("viewer", password="viewer-pass-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_addon"))
    client.force_login(viewer)
    assert client.post("/admin/generation/addon/scan/").status_code == 403
    client.force_login(admin)
    response = client.post("/admin/generation/addon/scan/", follow=True)
    assert "1 add-on(s) in the add-on folders: style [" in response.content.decode()
    assert StaffAction.objects.get().action == "scan add-ons"
