"""What several test modules share: the people and the submissions, real processes (the studio,
a production deployment on PostgreSQL and Redis), a browser over HTTP or Chromium, and small
real models. Test modules import from here, never from each other or from a conftest."""

import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
import zlib
from http.cookiejar import CookieJar
from pathlib import Path

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


class Studio:
    def __init__(self, var_dir: Path, **settings: str):
        self.var_dir, self.port, self.process, self.settings = var_dir, free_port(), None, settings
        self.base = f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        return {**env, "SDWEB_VAR_DIR": str(self.var_dir), "PYTHONUNBUFFERED": "1", **self.settings}

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


    def add_tiny_addons(self) -> None:
        """Register add-ons that fit the studio's test model: LoRA tiny-style, embedding tinyneg and
        ControlNet tiny-canny (with its tiny config)."""
        from generation.engine.loading import load_pipeline
        from generation.engine.testmodel import make_tiny_addons

        files = make_tiny_addons(load_pipeline(str(self.var_dir / "models" / "sdweb-test-tiny")).pipe,
                                 self.var_dir / "addon-files")
        self.manage(
            "from generation.library.addons import addon_register as r; "
            f"r(kind='lora', name='tiny-style', source='{files['lora']}'); "
            f"r(kind='embedding', name='tinyneg', source='{files['embedding']}'); "
            f"print(r(kind='controlnet', name='tiny-canny', source='{files['controlnet']}', "
            f"config='{files['controlnet_config']}').title)")


class OidcProvider:
    """The test OpenID Connect provider (tests.oidc_idp) in a process of its own, with `users`
    ({username, email, password, groups}) and one client, "sdweb", that may return to `redirect_uris`."""

    SECRET = "sdweb-test-secret"

    def __init__(self, folder: Path, users: list[dict], redirect_uris: list[str]):
        self.port, self.folder = free_port(), folder
        self.issuer = f"http://127.0.0.1:{self.port}/openid"
        config = {"port": self.port, "database": str(folder / "idp.sqlite3"), "users": users,
                  "clients": [{"id": "sdweb", "secret": self.SECRET, "redirect_uris": redirect_uris}]}
        (folder / "idp.json").write_text(json.dumps(config))

    def settings(self, **more) -> dict:
        """The studio's environment for signing in with it."""
        return {"SDWEB_OIDC_ISSUER": self.issuer, "SDWEB_OIDC_CLIENT_ID": "sdweb", "SDWEB_OIDC_CLIENT_SECRET": self.SECRET,
                "SDWEB_OIDC_NAME": "Example School", "SDWEB_OIDC_SCOPES": "openid email profile groups", **more}

    def start(self):
        self.log = open(self.folder / "idp.log", "a")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.oidc_idp", str(self.folder / "idp.json")], cwd=ROOT,
                                        stdout=self.log, stderr=subprocess.STDOUT, env={
                                            **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}})
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.issuer + "/.well-known/openid-configuration", timeout=2)
                return self
            except OSError:
                assert self.process.poll() is None, (self.folder / "idp.log").read_text()
                assert time.monotonic() < deadline, "the OIDC provider did not start"
                time.sleep(0.2)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


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


def form_data(checkpoint, **overrides):
    return {"prompt": "a lighthouse at dusk", "negative_prompt": "", "checkpoint": checkpoint.pk, "width": 256,
            "height": 256, "steps": 4, "guidance_scale": 7, "scheduler": "Euler a", "seed": 42, "num_images": 2,
            **overrides}


def params(checkpoint, **overrides):
    return {**form_data(checkpoint, **overrides), "checkpoint": checkpoint}


def assert_ledger_balanced():
    from django.db.models import Sum

    from generation.credits.models import CreditAccount, CreditEntry

    for account in CreditAccount.objects.all():
        assert account.balance == (CreditEntry.objects.filter(account=account).aggregate(s=Sum("amount"))["s"] or 0)


def refunds(job) -> int:
    from generation.credits.models import CreditEntry

    return CreditEntry.objects.filter(job=job, kind=CreditEntry.REFUND).count()


def tiny_safety_checker(folder, threshold: float):
    """diffusers' real StableDiffusionSafetyChecker, tiny and random; `threshold` sets its verdict."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    small = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    config = CLIPConfig(text_config=dict(small, vocab_size=100, bos_token_id=0, eos_token_id=1),
                        vision_config=dict(small, image_size=32, patch_size=4), projection_dim=32)
    torch.manual_seed(0)
    model = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        model.concept_embeds_weights.fill_(threshold)
        model.special_care_embeds_weights.fill_(threshold)
    model.save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


POSTGRES = os.environ.get("SDWEB_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")


REDIS = os.environ.get("SDWEB_TEST_REDIS", "redis://127.0.0.1:6379/7")
RABBITMQ = os.environ.get("SDWEB_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")


def missing_services(broker: str = "") -> list[str]:
    import psycopg
    import redis

    missing = []
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.Error as error:
        missing.append(f"PostgreSQL at {POSTGRES} ({error.__class__.__name__})")
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        missing.append(f"Redis at {REDIS} ({error.__class__.__name__})")
    if broker:
        from kombu import Connection

        try:
            with Connection(broker, connect_timeout=3) as connection:
                connection.ensure_connection(max_retries=1)
        except Exception as error:
            missing.append(f"the broker at {broker} ({error.__class__.__name__})")
    return missing


class Production:
    """A fresh database on the real PostgreSQL, a clean Redis database, and the environment that
    every process of this deployment (web, workers, scripts) runs with."""

    def __init__(self, var_dir: Path, database: str, broker: str = ""):
        base = POSTGRES.rsplit("/", 1)[0]
        self.env = {**{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
                    "DJANGO_SETTINGS_MODULE": "sdweb.settings",
                    "DATABASE_URL": f"{base}/{database}", "REDIS_URL": REDIS, "SDWEB_VAR_DIR": str(var_dir),
                    "SECRET_KEY": "production-tests-secret", "SDWEB_PREVIEW_INTERVAL": "0",
                    "SDWEB_ACTIVE_JOB_CAP": "100", "PYTHONUNBUFFERED": "1",
                    **({"SDWEB_BROKER_URL": broker} if broker else {})}

    def web(self, port: int, log) -> subprocess.Popen:
        """The ASGI web process (pages, API, websockets) as deployed."""
        return subprocess.Popen([sys.executable, "-m", "uvicorn", "sdweb.asgi:application", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning", "--ws", "websockets-sansio", "--no-proxy-headers",
                                 "--timeout-graceful-shutdown", "5"],
                                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def worker(self, name: str, log=subprocess.DEVNULL, env: dict | None = None) -> subprocess.Popen:
        """A GPU host's Celery worker: prefork, one pool process."""
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "sdweb", "worker", "--pool=prefork",
                                 "--concurrency=1", "--loglevel=WARNING", "-n", f"{name}@%h"],
                                cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT)

    def query(self, sql: str, *params) -> list[tuple]:
        """Read this deployment's database directly: polling through `script` would start a Django
        process each time, taking the CPU the workers under test need."""
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as connection:
            return connection.execute(sql, params).fetchall()

    def script(self, code: str) -> dict:
        """Run Python with Django set up against this deployment; it prints one JSON object."""
        program = "import django, json\ndjango.setup()\n" + textwrap.dedent(code)
        result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])


def web_answers(base: str) -> bool:
    """Whether the web process at `base` answers /healthz yet."""
    try:
        Browser(base).get("/healthz")
        return True
    except OSError:
        return False


def http_sign_up(base, name) -> Browser:
    browser = Browser(base)
    browser.post("/accounts/signup/", {"username": name, "password1": "a-long-pass-123",
                                       "password2": "a-long-pass-123"})
    return browser


def job_socket(deployment, browser, job_id, origin="own"):
    headers = {"Cookie": f"sessionid={browser.cookie('sessionid')}"}
    if origin == "own":
        headers["Origin"] = deployment.base
    elif origin:
        headers["Origin"] = origin
    return connect(f"ws://127.0.0.1:{deployment.port}/ws/jobs/{job_id}/", additional_headers=headers)


SCREENS = Path(__file__).parent / "e2e" / "screens"


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


PHONE = {"width": 390, "height": 844}


_names = itertools.count(1)


def sign_up(page, name=None) -> str:
    name = name or f"user{next(_names)}"
    page.goto("/accounts/signup/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill("a-long-pass-123")
    page.get_by_label("Password confirmation").fill("a-long-pass-123")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/generate/")
    return name


def generate(page, prompt="a lighthouse at dusk", steps=4, images=2, size=256, wait=True):
    """Fill the studio form and submit; wait for the images unless told not to."""
    page.goto("/generate/")
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Size", exact=True).select_option(f"{size}x{size}")
    page.get_by_label("Steps").fill(str(steps))
    page.get_by_label("Images").fill(str(images))
    page.get_by_role("button", name="Generate").click()
    page.wait_for_url("**/generate/?job=*")
    if wait:
        page.wait_for_function(f"document.querySelectorAll('#images img').length == {images}")
    return page.url.split("job=")[1]


def balance(page) -> int:
    return int(page.locator("#balance").text_content())


def screenshot(page, name):
    """Save the page as a person sees it, on a desktop and on a phone, in the light and the dark
    theme, for a look by eye."""
    SCREENS.mkdir(exist_ok=True)
    phone = page.context.browser.new_context(viewport=PHONE, storage_state=page.context.storage_state(),
                                             base_url=page.url, bypass_csp=True)
    try:
        phone_page = phone.new_page()
        phone_page.goto(page.url)
        for shown, suffix in ((page, ""), (phone_page, "-phone")):
            theme = shown.evaluate("document.documentElement.dataset.theme || ''")
            for look in ("light", "dark"):
                shown.evaluate(f"document.documentElement.dataset.theme = '{look}'")
                shown.screenshot(path=SCREENS / f"{name}{suffix}{'-dark' if look == 'dark' else ''}.png", full_page=True)
            shown.evaluate("t => { const root = document.documentElement; if (t) root.dataset.theme = t; "
                           "else delete root.dataset.theme; }", theme)
    finally:
        phone.close()


def make_admin(studio, name="boss") -> str:
    env = {**studio.env(), "DJANGO_SUPERUSER_PASSWORD": "admin-pass-123"}
    subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", name,
                    "--email", f"{name}@example.com"], cwd=ROOT, env=env, check=True, capture_output=True)
    return name


def staff_page(new_page, studio, name):
    """A page signed in as a new superuser called `name`."""
    make_admin(studio, name)
    page = new_page()
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill("admin-pass-123")
    page.get_by_role("button", name="Log in").click()
    return page


AXE = Path(__file__).parent / "e2e" / "vendor" / "axe.min.js"  # npm's axe-core 4.14.1, unchanged (MPL-2.0)


def serious_accessibility_problems(page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now, one line each."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("axe.run(document, {resultTypes: ['violations']}).then(r => r.violations)")
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in found if v["impact"] in ("serious", "critical")]


def photo(seed: int, width: int = 512, height: int | None = None):
    """A picture with what photos have and the test model's noise lacks: smooth gradients, flat
    areas, hard edges, a little blur and sensor noise (made with Pillow, different for each seed)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    height = height or width
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    sky = np.stack([rng.uniform(40, 200) + rng.uniform(-60, 60) * x + rng.uniform(-60, 60) * y for _ in range(3)], -1)
    picture = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(rng.integers(5, 25)):
        (cx, cy), r = rng.integers(0, max(width, height), 2), rng.integers(10, max(width, height) // 3)
        shape = draw.ellipse if rng.integers(2) else draw.rectangle
        shape((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    picture = picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3))))
    grain = rng.normal(0, rng.uniform(0, 8), (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(picture) + grain, 0, 255).astype(np.uint8))


def ssim(a, b) -> float:
    """Mean SSIM of two pictures' luminance (Gaussian window 11, sigma 1.5, the usual constants)."""
    import cv2
    import numpy as np

    x, y = (np.asarray(im.convert("L"), dtype=np.float64) for im in (a, b))
    blur = lambda v: cv2.GaussianBlur(v, (11, 11), 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float(np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


def photo_generate(request, *, watermark_payloads=None, **_):
    """Stands in for generate() on a real checkpoint (which this machine can't run) where a test
    needs pictures that differ from job to job as real ones do: the test model's noise all looks
    alike to a perceptual hash. Photo-like pictures of the request's size, watermarked as
    generate() does; everything after (PNG, C2PA, fingerprint, audit) is the real code."""
    from generation.engine.run import GenerationResult
    from generation.engine.watermark import embed_watermark

    seeds = request.seeds()
    pictures = [photo(zlib.crc32(request.prompt.encode()) + seed, request.width, request.height) for seed in seeds]
    if watermark_payloads:
        pictures = [embed_watermark(picture, payload) for picture, payload in zip(pictures, watermark_payloads)]
    return GenerationResult(request=request, images=pictures, seeds=seeds, indexes=list(range(len(seeds))))


def _segments(data: bytes) -> list[bytes]:
    """A JPEG's marker segments, each scan with its coded data."""
    found, at = [], 2
    while data[at + 1] != 0xD9:
        end = at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
        if data[at + 1] == 0xDA:  # coded data runs to the next marker that is not 0xFF00 or a restart
            while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end += 1
        found.append(data[at:end])
        at = end
    return found


def scan_bomb(scans: int) -> bytes:
    """The tester's file: a 4096x4096 progressive JPEG whose smallest scan (16 bytes) is repeated:
    each copy is one more pass over 16 M pixels (this many take ~0.5 ms each here to decode)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4096, 4096), (120, 130, 140)).save(out, "JPEG", progressive=True, quality=90)
    segments = _segments(out.getvalue())
    smallest = min((s for s in segments if s[1] == 0xDA), key=len)
    return b"\xff\xd8" + b"".join(segments) + smallest * scans + b"\xff\xd9"


def esrgan_state(*, features=8, growth=4, blocks=1, ups=2, seed=0) -> dict:
    """A tiny RRDBNet's tensors in the original ESRGAN layout (model.N...), random, scaled so its
    pictures vary: what a real ESRGAN .pth holds, 1/10 000 of the size."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def conv(name, out, inp):
        state[f"{name}.weight"] = torch.randn(out, inp, 3, 3, generator=gen) * (2 / (inp * 9) ** 0.5)
        state[f"{name}.bias"] = torch.randn(out, generator=gen) * 0.01

    state = {}
    conv("model.0", features, 3)
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                conv(f"model.1.sub.{b}.RDB{r}.conv{c}.0", growth if c < 5 else features, features + (c - 1) * growth)
    conv(f"model.1.sub.{blocks}", features, features)
    for k in range(ups):
        conv(f"model.{3 + 3 * k}", features, features)
    conv(f"model.{3 * ups + 2}", features, features)
    conv(f"model.{3 * ups + 4}", 3, features)
    return state


def esrgan_new_layout(state: dict) -> dict:
    """The same tensors named as BasicSR (Real-ESRGAN) names them."""
    tops = sorted({int(k.split(".")[1]) for k in state if re.match(r"model\.\d+\.weight$", k)})
    names = {0: "conv_first", **{n: f"conv_up{k + 1}" for k, n in enumerate(tops[1:-2])}, tops[-2]: "conv_hr",
             tops[-1]: "conv_last"}
    trunk = max(int(m[1]) for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.weight$", k)))
    out = {}
    for key, tensor in state.items():
        if m := re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(\w+)$", key):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = tensor
        elif key.startswith(f"model.1.sub.{trunk}."):
            out["conv_body." + key.rsplit(".", 1)[1]] = tensor
        else:
            out[f"{names[int(key.split('.')[1])]}.{key.rsplit('.', 1)[1]}"] = tensor
    return out


def stored_picture(image):
    """A gallery image's stored PNG, opened (its info carries the infotext)."""
    from django.core.files.storage import default_storage
    from PIL import Image

    with default_storage.open(image.png.name, "rb") as file:
        picture = Image.open(file)
        picture.load()
    return picture


def install_sd35(models: Path, files: dict, name: str, file_name: str) -> str:
    """Stability's SD 3.5 file (testsd3.make_tiny_sd3's "checkpoint": the MMDiT and its VAE) copied into
    the models folder, its text encoders into the text-encoder folder under names of their own (FLUX.1's
    tiny ones there have other widths): the Python that registers it and picks them in the admin."""
    shutil.copy(files["checkpoint"], models / file_name)
    texts = models / "text_encoders"
    shutil.copytree(files["text_encoders"] / "t5_tokenizer", texts / "t5_tokenizer", dirs_exist_ok=True)
    for part, saved in (("clip_l", "clip_l_sd3"), ("clip_g", "clip_g"), ("t5xxl_fp16", "t5xxl_sd3")):
        shutil.copy(files["text_encoders"] / f"{part}.safetensors", texts / f"{saved}.safetensors")
    return (f"from django.core.management import call_command; call_command('add_model', '{name}', "
            f"'{models / file_name}', '--config', '{files['config']}'); "
            f"from generation.library.models import Checkpoint; Checkpoint.objects.filter(name='{name}')"
            ".update(clip_file='clip_l_sd3.safetensors', t5_file='t5xxl_sd3.safetensors')")
