"""`python manage.py up` as a person runs it: a real process, real HTTP, a real websocket."""

import base64
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.support import ROOT, Browser, Studio, http_sign_up, job_socket, wait_until


@pytest.fixture
def studio(tmp_path):
    studio = Studio(tmp_path)
    yield studio
    if studio.process and studio.process.poll() is None:
        studio.process.kill()


def test_up_serves_the_studio_and_a_job_survives_a_restart(studio):
    studio.start()
    browser = Browser(studio.base)
    url, page = browser.post("/accounts/signup/", {"username": "dana", "password1": "a-long-pass-123",
                                                   "password2": "a-long-pass-123"})
    assert url.endswith("/generate/") and "100</span> credits" in page and "Test model: its images are noise" in page
    assert browser.get("/static/job.js")[1].startswith("// The live view")

    # A long job: stop the server while it runs.
    checkpoint = re.search(r'<option value="(\d+)" selected>sdweb-test-tiny', page).group(1)
    url, page = browser.post("/generate/", {"prompt": "a slow lighthouse", "checkpoint": checkpoint,
                                            "width": 512, "height": 512, "steps": 60, "guidance_scale": 7,
                                            "scheduler": "Euler a", "seed": 5, "num_images": 1})
    job_page = f"/jobs/{url.split('job=')[1]}/"

    def status():
        return re.search(r"Status: <strong>(\w+)</strong>", browser.get(job_page)[1]).group(1)

    wait_until(lambda: status() == "running")
    assert studio.stop() == 0
    state = f"from generation.models import Job; j = Job.objects.get(pk='{job_page.split('/')[2]}'); print(j.status, j.attempts)"
    assert studio.manage(state) == "queued 1"  # back in the queue, nothing charged twice or lost

    # A LoRA copied into the models folder while the studio is down is there after the restart.
    from generation.engine.loading import load_pipeline
    from generation.engine.testmodel import make_tiny_addons

    files = make_tiny_addons(load_pipeline(str(studio.var_dir / "models" / "sdweb-test-tiny")).pipe, studio.var_dir / "made")
    (studio.var_dir / "models" / "Lora").mkdir(parents=True, exist_ok=True)
    shutil.copy(files["lora"], studio.var_dir / "models" / "Lora" / "copied-style.safetensors")
    studio.start()
    request = urllib.request.Request(studio.base + "/sdapi/v1/loras", headers={
        "Authorization": "Basic " + base64.b64encode(b"dana:a-long-pass-123").decode()})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert [lora["name"] for lora in json.loads(response.read())] == ["copied-style"]
    wait_until(lambda: status() == "succeeded", timeout=300)
    assert studio.manage(state) == "succeeded 2"
    balance = studio.manage("from generation.models import CreditAccount as A; a = A.objects.get(); "
                            "print(a.balance, sum(a.entries.values_list('amount', flat=True)))")
    assert balance == "98 98"  # charged once: 2 credits for 512x512 x 60 steps
    assert studio.stop() == 0
    assert "Stopped. Unfinished jobs resume at the next start." in (studio.var_dir / "up.log").read_text()


def test_up_listens_on_localhost_unless_told_and_warns_when_told(studio):
    result = subprocess.run([sys.executable, "manage.py", "up", "--help"], cwd=ROOT, env=studio.env(),
                            capture_output=True, text=True)
    assert "--host" in result.stdout and "--port" in result.stdout
    studio.start()
    log = (studio.var_dir / "up.log").read_text()
    assert f"http://127.0.0.1:{studio.port}/" in log and "createsuperuser" in log
    assert studio.stop() == 0


def submitted(studio, username, **fields) -> tuple[Browser, str]:
    """A new user's job from the generate page (the test model, 256 px, 30 steps unless told):
    their browser and the job's id."""
    browser = http_sign_up(studio.base, username)
    checkpoint = re.search(r'<option value="(\d+)" selected>sdweb-test-tiny', browser.get("/generate/")[1]).group(1)
    url, _ = browser.post("/generate/", {"prompt": "a lighthouse", "checkpoint": checkpoint, "width": 256,
                                         "height": 256, "steps": 30, "guidance_scale": 7, "scheduler": "Euler a",
                                         "seed": 5, "num_images": 1, **fields})
    return browser, url.split("job=")[1]


def test_up_runs_torch_in_a_worker_process_of_its_own_and_its_previews_reach_the_page(studio):
    studio.start()
    browser, job_id = submitted(studio, "erin")
    events = []
    with job_socket(studio, browser, job_id) as socket:
        while not events or events[-1]["type"] not in ("finished", "failed"):
            events.append(json.loads(socket.recv(timeout=120)))
    assert events[-1]["type"] == "finished"
    previews = [e for e in events if e["type"] == "progress" and e.get("preview")]
    assert previews and previews[-1]["step"] == 30  # the last step's preview always comes

    def torch_loaded(process):
        return any("libtorch" in Path(m.path).name for m in process.memory_maps())

    web = psutil.Process(studio.process.pid)
    workers = [child for child in web.children() if torch_loaded(child)]
    assert len(workers) == 1 and not torch_loaded(web)
    assert studio.stop() == 0
    assert not workers[0].is_running()


def test_a_worker_process_that_dies_is_replaced_and_its_job_runs_again_charged_once(studio):
    studio.start()
    browser, job_id = submitted(studio, "finn", width=512, height=512, steps=60)

    def status():
        return re.search(r"Status: <strong>(\w+)</strong>", browser.get(f"/jobs/{job_id}/")[1]).group(1)

    wait_until(lambda: status() == "running")
    web = psutil.Process(studio.process.pid)
    dying = next(child for child in web.children() if "spawn_main" in " ".join(child.cmdline()))
    dying.kill()  # as the kernel's OOM killer would
    wait_until(lambda: status() == "succeeded", timeout=300)
    assert not dying.is_running() and "The worker process stopped" in (studio.var_dir / "up.log").read_text()
    assert studio.manage(f"from generation.models import Job; print(Job.objects.get(pk='{job_id}').attempts)") == "2"
    balance = studio.manage("from generation.models import CreditAccount as A; a = A.objects.get(); "
                            "print(a.balance, sum(a.entries.values_list('amount', flat=True)))")
    assert balance == "98 98"  # charged once
    assert studio.stop() == 0
