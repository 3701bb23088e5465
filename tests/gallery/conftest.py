import pytest


@pytest.fixture
def shared(client, alice, make_job):
    """Alice's image, made public by Alice; returns (image, share URL) and signs everyone out."""
    image = make_job(alice).images.first()
    client.force_login(alice)
    client.post(f"/images/{image.hex_id}/visibility/", {"public": "1"})
    image.refresh_from_db()
    client.logout()
    return image, f"/s/{image.share_slug}/"
