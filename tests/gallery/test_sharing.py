import re

import pytest

from gallery.models import Image


def urls(image):
    return [f"/images/{image.hex_id}.png", f"/images/{image.hex_id}.webp"]


def as_viewer(client, who, users):
    client.logout()
    if who != "signed out":
        client.force_login(users[who])


def test_a_private_image_is_404_for_everyone_but_the_owner_and_staff(client, alice, carol, admin, make_job):
    image = make_job(alice).images.first()
    users = {"owner": alice, "stranger": carol, "staff": admin}
    for who, allowed in [("owner", True), ("stranger", False), ("signed out", False), ("staff", True)]:
        as_viewer(client, who, users)
        for url in urls(image):
            assert (client.get(url).status_code == 200) is allowed, (who, url)
        assert (client.get(f"/images/{image.hex_id}/").status_code == 200) is allowed or who == "signed out"
    assert image.share_slug is None


def test_a_public_image_is_in_the_public_gallery_and_on_its_share_page(client, shared):
    image, share_url = shared
    explore = client.get("/explore/").content.decode()
    assert share_url in explore
    page = client.get(share_url)
    assert page.status_code == 200 and image.job.prompt in page.content.decode()
    for url in urls(image):
        assert client.get(url).status_code == 200


def test_making_it_private_again_closes_the_share_page_and_file_urls_at_once(client, alice, carol, admin, shared):
    image, share_url = shared
    client.force_login(alice)
    client.post(f"/images/{image.hex_id}/visibility/", {"public": "0"})
    for who, users in [("signed out", {}), ("stranger", {"stranger": carol})]:
        as_viewer(client, who, users)
        assert client.get(share_url).status_code == 404
        assert share_url not in client.get("/explore/").content.decode()
        for url in urls(image):
            assert client.get(url).status_code == 404
    as_viewer(client, "staff", {"staff": admin})
    assert client.get(urls(image)[0]).status_code == 200
    client.force_login(alice)
    client.post(f"/images/{image.hex_id}/visibility/", {"public": "1"})
    assert Image.objects.get(pk=image.pk).share_slug != share_url.split("/")[2]  # the old link stays dead


def test_image_files_are_never_cached(client, shared):
    image, _ = shared
    assert client.get(urls(image)[0])["Cache-Control"] == "private, no-store"


def test_only_the_owner_can_share_or_delete(client, carol, shared):
    image, _ = shared
    client.force_login(carol)
    assert client.post(f"/images/{image.hex_id}/visibility/", {"public": "0"}).status_code == 404
    assert client.post(f"/images/{image.hex_id}/delete/").status_code == 404
    assert Image.objects.get(pk=image.pk).is_public


def test_a_guessed_share_slug_or_image_id_finds_nothing(client, shared):
    assert client.get("/s/not-a-real-slug/").status_code == 404
    assert client.get("/images/0000000000000001.png").status_code == 404
    assert client.get("/images/zzzz.png").status_code == 404


def test_the_public_gallery_says_what_to_do_when_empty(client, db):
    assert "Nobody has shared an image yet" in client.get("/explore/").content.decode()


@pytest.mark.parametrize("hex_id", ["ffffffffffffffff", "8000000000000000", "0000000000000000", "12", "-000000000000001"])
def test_impossible_image_ids_are_404_not_errors(client, alice, hex_id):
    client.force_login(alice)
    for url in (f"/images/{hex_id}.png", f"/images/{hex_id}/", f"/images/{hex_id}.webp"):
        assert client.get(url).status_code == 404, url


def test_a_maker_is_named_on_explore_and_the_share_page_only_after_choosing_it(client, alice, shared):
    image, share_url = shared
    for page in (client.get("/explore/"), client.get(share_url)):
        assert "alice" not in page.content.decode()
    client.force_login(alice)
    client.post("/account/sharing/", {"shown": "1"})
    client.logout()
    assert "by alice" in client.get("/explore/").content.decode()
    assert "By alice" in client.get(share_url).content.decode()


def test_remix_opens_the_studio_with_the_settings_but_not_the_makers_starting_image(client, carol, shared):
    image, share_url = shared
    page = client.get(share_url).content.decode()
    remix = re.search(r'href="(/generate/\?[^"]+)">Remix', page).group(1).replace("&amp;", "&")
    client.force_login(carol)
    form = client.get(remix).context["form"]
    assert form.initial["prompt"] == image.job.prompt and int(form.initial["seed"]) == image.seed
    assert "init" not in remix
