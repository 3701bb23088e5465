"""Images on S3-compatible storage (django-storages + boto3), as workers and web processes on
different machines share them. The S3 server here is moto's (a local S3 emulator: no cloud can be
reached from this machine): the worker writes the PNG and thumbnail as private objects, the web
process serves them only through its permission checks, and deleting an image removes both."""

import subprocess
import sys

import pytest

from tests.support import free_port, wait_until

RUN = """
from django.contrib.auth.models import User
from django.test import Client
from gallery.models import Image
from gallery.services import images_delete
from generation.library.checkpoints import checkpoint_ensure_test_model
from generation.jobs.worker import FINISHER, job_run_next
from generation.jobs.submit import job_submit
owner, stranger = User.objects.create_user("s3owner"), User.objects.create_user("s3stranger")
job = job_submit(user=owner, params={"prompt": "stored far away", "checkpoint": checkpoint_ensure_test_model(),
                 "width": 256, "height": 256, "steps": 2, "num_images": 2})
job_run_next(worker="gpu-s3")
FINISHER.close()  # its finishing process stores the images
image, kept = Image.objects.get(job=job, index=0), Image.objects.get(job=job, index=1)
answers = {}
for who in (owner, stranger):
    client = Client(HTTP_HOST="localhost")
    client.force_login(who)
    response = client.get(f"/images/{image.hex_id}.png")
    answers[who.username] = [response.status_code, b"".join(response.streaming_content)[:8].hex()
                             if response.status_code == 200 else ""]
names = [image.png.name, image.thumbnail.name]
images_delete(images=[image])
print(json.dumps({"answers": answers, "names": names, "kept": [kept.png.name, kept.thumbnail.name]}))
"""


@pytest.fixture
def s3(production):
    import boto3

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")

    def answers():
        try:
            client.list_buckets()
            return True
        except Exception:
            return False

    try:
        wait_until(answers, timeout=60)
        client.create_bucket(Bucket="sdweb-images")
        env = {"SDWEB_S3_BUCKET": "sdweb-images", "SDWEB_S3_ENDPOINT_URL": endpoint, "SDWEB_S3_REGION": "us-east-1",
               "SDWEB_S3_ACCESS_KEY": "test", "SDWEB_S3_SECRET_KEY": "test"}
        yield client, env
    finally:
        server.terminate()
        server.wait(timeout=30)


def objects(client) -> dict:
    listing = client.list_objects_v2(Bucket="sdweb-images").get("Contents", [])
    return {item["Key"]: item["Size"] for item in listing}


def test_workers_store_private_objects_the_web_serves_by_permission_and_deletes(production, s3):
    client, env = s3
    saved = dict(production.env)
    production.env.update(env)
    try:
        result = production.script(RUN)
    finally:
        production.env.clear()
        production.env.update(saved)
    assert result["answers"] == {"s3owner": [200, "89504e470d0a1a0a"], "s3stranger": [404, ""]}  # a PNG, or nothing
    stored = objects(client)  # (the worker may also have run jobs other tests left queued)
    assert all(key.startswith("sdweb/") for key in stored)
    assert {f"sdweb/{name}" for name in result["kept"]} <= set(stored)  # the other image and its thumbnail
    assert not {f"sdweb/{name}" for name in result["names"]} & set(stored)  # the deleted image left S3
    key = f"sdweb/{result['kept'][0]}"
    grants = client.get_object_acl(Bucket="sdweb-images", Key=key)["Grants"]
    assert all(g["Grantee"].get("URI") is None for g in grants)  # private: no AllUsers grant
