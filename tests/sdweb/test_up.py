"""`python manage.py up` as a person runs it: a real process, real HTTP, a real websocket."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Studio:
    def __init__(self, var_dir: Path):
        self.var_dir, self.port, self.process = var_dir, free_port(), None
        self.base = f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        return {**env, "SDWEB_VAR_DIR": str(self.var_dir), "PYTHONUNBUFFERED": "1"}

    def start(self):
        self.log = open(self.var_dir / "up.log", "a")
        self.process = subprocess.Popen([sys.executable, "manage.py", "up", "--port", str(self.port)], cwd=ROOT,
                                        env=self.env(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(self.base + "/", timeout=2)
                return
            except OSError:
                assert self.process.poll() is None, (self.var_dir / "up.log").read_text()
                assert time.monotonic() < deadline, "the studio did not start"
                time.sleep(0.2)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=60)
        self.log.close()
        return code

    def manage(self, code: str) -> str:
        """Run Python against the studio's database, as an operator's shell would."""
        result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=self.env(),
                                capture_output=True, text=True, check=True)
        return result.stdout.strip().splitlines()[-1]


class Browser:
    """Cookies and CSRF like a browser, over plain HTTP."""

    def __init__(self, base):
        self.base, self.jar = base, CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path):
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.geturl(), response.read().decode()

    def post(self, path, data):
        _, page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(self.base + path, data=body, headers={"Referer": self.base + path})
        with self.opener.open(request, timeout=30) as response:
            return response.geturl(), response.read().decode()

    def cookie(self, name):
        return next(c.value for c in self.jar if c.name == name)


def wait_until(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


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
    assert url.endswith("/generate/") and "100</span> credits" in page and "Test model: images are noise" in page
    assert browser.get("/static/job.js")[1].startswith("// The live view")

    # A long job: stop the server while it runs.
    checkpoint = re.search(r'<option value="(\d+)" selected>sdweb-test-tiny', page).group(1)
    url, page = browser.post("/generate/", {"prompt": "a slow lighthouse", "checkpoint": checkpoint,
                                            "width": 512, "height": 512, "steps": 150, "guidance_scale": 7,
                                            "scheduler": "Euler a", "seed": 5, "num_images": 1})
    job_page = f"/jobs/{url.split('job=')[1]}/"

    def status():
        return re.search(r"Status: <strong>(\w+)</strong>", browser.get(job_page)[1]).group(1)

    wait_until(lambda: status() == "running")
    assert studio.stop() == 0
    state = f"from generation.models import Job; j = Job.objects.get(pk='{job_page.split('/')[2]}'); print(j.status, j.attempts)"
    assert studio.manage(state) == "queued 1"  # back in the queue, nothing charged twice or lost

    studio.start()
    wait_until(lambda: status() == "succeeded", timeout=300)
    assert studio.manage(state) == "succeeded 2"
    balance = studio.manage("from generation.models import CreditAccount as A; a = A.objects.get(); "
                            "print(a.balance, sum(a.entries.values_list('amount', flat=True)))")
    assert balance == "95 95"  # charged once: 5 credits for 512x512 x 150 steps
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
