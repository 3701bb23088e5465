import io
import json
import zipfile
from urllib.parse import parse_qs, urlparse

import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from gallery.models import Image
from gallery.selectors import PAGE_SIZE
from generation.credits.models import CreditAccount
from generation.engine import parse_parameters, read_watermark
from generation.jobs.models import Job
from generation.jobs.queue import job_cancel


def test_the_private_gallery_lists_my_images_newest_first(client, alice, carol, make_job):
    older = make_job(alice, prompt="an old barn")
    newer = make_job(alice, prompt="a new bridge")
    make_job(carol, prompt="carol's secret")
    client.force_login(alice)
    page = client.get("/gallery/")
    shown = [image.job_id for image in page.context["page"]]
    assert shown == [newer.pk, newer.pk, older.pk, older.pk]
    assert "carol&#x27;s secret" not in page.content.decode()


def test_a_gallery_or_explore_page_costs_four_queries_however_many_images_and_says_the_balance(
        client, alice, make_job, django_assert_num_queries):
    """The session, the user, one for what every page says (the balance, teams, the test model) and
    one for the page's images with their jobs and makers."""
    for n in range(3):
        make_job(alice, prompt=f"picture {n}").images.update(is_public=True)
    client.force_login(alice)
    for url in ("/gallery/", "/explore/"):
        with django_assert_num_queries(4):
            page = client.get(url).content.decode()
        balance = CreditAccount.objects.get(user=alice).balance
        assert page.count("<li data-width") == 6 and f'<span id="balance">{balance}</span>' in page, url


def test_explore_names_only_the_makers_who_chose_to_be_named(client, alice, carol, make_job):
    from gallery.services import sharing_name_set

    make_job(alice, prompt="alice's bridge").images.update(is_public=True)
    make_job(carol, prompt="carol's tower").images.update(is_public=True)
    sharing_name_set(user=alice, shown=True)
    page = client.get("/explore/").content.decode()
    assert page.count("· by alice") == 2 and "carol's tower" in page.replace("&#x27;", "'") and "by carol" not in page


def test_a_thumbnail_or_png_reads_the_image_alone_not_its_job(client, alice, make_job):
    """A gallery page asks for 24 thumbnails at once: each is the image's row, not its job's ~60 columns."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    image = make_job(alice, prompt="a quiet harbour").images.first()
    client.force_login(alice)
    for url in (f"/images/{image.hex_id}.webp", f"/images/{image.hex_id}.png"):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        assert not [q for q in queries.captured_queries if "generation_job" in q["sql"]], url


def test_the_gallery_is_searchable_by_prompt(client, alice, make_job):
    make_job(alice, prompt="a red fox in snow")
    make_job(alice, prompt="a blue whale")
    client.force_login(alice)
    found = client.get("/gallery/", {"q": "FOX"}).context["page"]
    assert {image.job.prompt for image in found} == {"a red fox in snow"}
    empty = client.get("/gallery/", {"q": "zebra"})
    assert "No image has a prompt with" in empty.content.decode()


def test_the_gallery_pages_by_cursor_without_skipping_or_repeating_images(client, alice, make_job, settings):
    settings.SDWEB = {**settings.SDWEB, "MAX_IMAGES": 4}
    jobs = [make_job(alice, num_images=4) for _ in range(7)]
    same_time = jobs[3].images.first().created_at  # two jobs made in the same microsecond: still one order
    Image.objects.filter(job__in=jobs[3:5]).update(created_at=same_time)
    client.force_login(alice)
    first = client.get("/gallery/").context["page"]
    second = client.get("/gallery/", {"before": first.older}).context["page"]
    assert (len(first), len(second), first.newer, second.older) == (PAGE_SIZE, 28 - PAGE_SIZE, "", "")
    shown = [image.pk for image in [*first, *second]]
    newest_first = sorted(Image.objects.filter(owner=alice), key=lambda i: (-i.created_at.timestamp(), i.index, i.pk))
    assert shown == [image.pk for image in newest_first]
    back = client.get("/gallery/", {"after": second.newer}).context["page"]
    assert [image.pk for image in back] == shown[:PAGE_SIZE] and back.older == first.older and back.newer == ""
    assert "Older →" in client.get("/gallery/").content.decode()
    mangled = ("x", "1.2", "99999999999999999999999.0.1", "-1.-1.zz", "1.0.ffffffffffffffffffff", "1.99999999999.1")
    for junk in mangled:  # a mangled link: the newest page
        assert [i.pk for i in client.get("/gallery/", {"before": junk}).context["page"]] == shown[:PAGE_SIZE]


def test_an_empty_gallery_says_what_to_do(client, alice):
    client.force_login(alice)
    assert "Generate your first image" in client.get("/gallery/").content.decode()


def test_the_image_page_shows_every_parameter_and_the_seed(client, alice, make_job):
    job = make_job(alice, prompt="a castle, (fog:1.2)", negative_prompt="blurry")
    image = job.images.get(index=1)
    client.force_login(alice)
    page = client.get(f"/images/{image.hex_id}/").content.decode()
    for text in ("a castle, (fog:1.2)", "Negative: blurry", f"<dd>{job.seed + 1} ", "<dd>256×256</dd>",
                 "<dd>2</dd>", "<dd>Euler a</dd>", "<dd>7.0</dd>", "<dd>sdweb-test-tiny</dd>"):
        assert text in page


def test_use_these_settings_prefills_the_form_with_this_images_seed(client, alice, make_job):
    job = make_job(alice, prompt="a castle", negative_prompt="blurry", guidance_scale=5.5)
    image = job.images.get(index=1)
    client.force_login(alice)
    url = client.get(f"/images/{image.hex_id}/").context["use_settings_url"]
    form = client.get(url).context["form"]
    query = parse_qs(urlparse(url).query)
    assert query["seed"] == [str(job.seed + 1)]
    for field, value in [("prompt", "a castle"), ("negative_prompt", "blurry"), ("guidance_scale", "5.5"),
                         ("width", "256"), ("steps", "2"), ("seed", str(job.seed + 1)), ("num_images", "1")]:
        assert str(form[field].value()) == value, field


def test_more_variants_queues_the_same_settings_with_new_seeds_and_charges_for_it(client, alice, make_job):
    job = make_job(alice)
    client.force_login(alice)
    response = client.post(f"/images/{job.images.first().hex_id}/variants/")
    variant = Job.objects.exclude(pk=job.pk).get()
    assert response["Location"] == f"/jobs/{variant.pk}/"
    assert variant.params() | {"seed": None} == job.params() | {"seed": None}
    assert variant.seed != job.seed and variant.status == "queued"
    assert alice.credits.entries.filter(kind="charge").count() == 2


def test_keeping_some_variants_discards_the_rest_with_their_files(client, alice, make_job, settings):
    settings.SDWEB = {**settings.SDWEB, "MAX_IMAGES": 4}
    job = make_job(alice, num_images=4)
    images = list(job.images.order_by("index"))
    client.force_login(alice)
    client.post(f"/jobs/{job.pk}/keep/", {"keep": [images[0].hex_id, images[2].hex_id]})
    assert list(job.images.order_by("index").values_list("index", flat=True)) == [0, 2]
    assert default_storage.exists(images[0].png.name)
    for gone in (images[1], images[3]):
        assert not default_storage.exists(gone.png.name) and not default_storage.exists(gone.thumbnail.name)


def test_the_job_line_says_what_was_made_with_what_and_what_it_cost(client, alice, checkpoint, library, make_job):
    single = make_job(alice, num_images=1, prompt="a fox <lora:tiny-style:0.6>")
    client.force_login(alice)
    page = client.get(f"/jobs/{single.pk}/").content.decode()
    assert " · LoRA tiny-style (0.6)\n" in page and "Keep the checked" not in page  # nothing to choose from
    client.post(f"/images/{single.images.get().hex_id}/upscale/", {"upscale_by": "2", "upscaler": "Lanczos"})
    upscale = Job.objects.get(upscale_by=2)
    line = client.get(f"/jobs/{upscale.pk}/").content.decode().split('class="params">')[1].split("</p>")[0]
    assert line.startswith("512×512 · upscale ×2 (Lanczos) · ") and "steps" not in line
    job_cancel(user=alice, job_id=upscale.pk)
    cost = f"{upscale.cost} credit{'s' if upscale.cost > 1 else ''}"
    assert f"{cost}, refunded</p>" in client.get(f"/jobs/{upscale.pk}/").content.decode()


def test_someone_else_cannot_discard_my_variants(client, alice, carol, make_job):
    job = make_job(alice)
    client.force_login(carol)
    assert client.post(f"/jobs/{job.pk}/keep/", {"keep": []}).status_code == 404
    assert job.images.count() == 2


def test_deleting_an_image_removes_its_files(client, alice, make_job):
    image = make_job(alice).images.first()
    client.force_login(alice)
    client.post(f"/images/{image.hex_id}/delete/")
    assert not Image.objects.filter(pk=image.pk).exists()
    assert not default_storage.exists(image.png.name) and not default_storage.exists(image.thumbnail.name)
    assert client.get(f"/images/{image.hex_id}.png").status_code == 404


def test_the_downloaded_original_carries_its_metadata_and_watermark(client, alice, make_job):
    image = make_job(alice, prompt="a quiet harbour").images.first()
    client.force_login(alice)
    response = client.get(f"/images/{image.hex_id}.png", {"download": "1"})
    assert f'filename="sdweb-{image.hex_id}.png"' in response["Content-Disposition"]
    png = PILImage.open(io.BytesIO(b"".join(response.streaming_content)))
    assert parse_parameters(png.info["parameters"])["prompt"] == "a quiet harbour"
    assert read_watermark(png) == image.watermark_payload


def test_the_zip_export_holds_my_originals_and_their_metadata(client, alice, carol, make_job):
    mine = make_job(alice, prompt="mine, all mine")
    make_job(carol, prompt="not alice's")
    client.force_login(alice)
    response = client.get("/account/export.zip")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    index = json.loads(archive.read("index.json"))
    assert sorted(entry["id"] for entry in index) == sorted(i.hex_id for i in mine.images.all())
    assert all(entry["prompt"] == "mine, all mine" for entry in index)
    png = PILImage.open(io.BytesIO(archive.read(index[0]["file"])))
    assert parse_parameters(png.info["parameters"])["seed"] == index[0]["seed"]


@pytest.mark.parametrize("url", ["/gallery/", "/account/export.zip"])
def test_signed_out_visitors_have_no_private_gallery(client, db, url):
    assert client.get(url).status_code == 302
