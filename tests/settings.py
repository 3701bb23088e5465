"""Test settings: the embedded defaults, with previews every step, a fast password hasher, and
files and the database in a temporary folder."""

import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="sdweb-tests-"))
os.environ["SDWEB_VAR_DIR"] = str(_TMP)
os.environ["SDWEB_PREVIEW_INTERVAL"] = "0"  # every step, so progress is observable in order
os.environ.setdefault("SDWEB_TORCH_THREADS", "1")  # one per test worker: `pytest -n 2` shares two cores

from sdweb.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# A file, not memory: the worker thread, the web thread and the test share it as in production.
DATABASES["default"]["TEST"] = {"NAME": str(_TMP / "test.sqlite3")}  # noqa: F405
STORAGES["default"]["OPTIONS"]["location"] = str(_TMP / "media")  # noqa: F405
MEDIA_ROOT = _TMP / "media"
CELERY_TASK_ALWAYS_EAGER = False  # tests run the task themselves, or start the embedded worker
SDWEB["MODELS_DIR"] = _TMP / "models"  # noqa: F405
# Tests that run jobs in the test's own transaction finish them on the same thread; the tests of
# the finishing processes, and every server the tests start, use the processes.
SDWEB["FINISH_PROCESSES"] = 0  # noqa: F405
