"""At size on PostgreSQL (bench/at_size.py on a database of its own, filled by fill_at_size): the
gallery, Explore, the image page, the audit review and its search (for a word few rows have; for
common words PostgreSQL rightly reads the table until it has a page) and the dashboard read the big
tables through indexes, never a sequential scan, and the filled audit chain verifies."""

import json
import os
import subprocess
import sys

from tests.support import POSTGRES, ROOT

INDEXED = ("gallery", "gallery, last page", "gallery search", "explore", "explore, deep", "image page", "audit review",
           "audit review, one day", "audit review, one user", "audit search", "dashboard")


def test_pages_read_big_tables_through_indexes(production):  # the fixture: PostgreSQL is up
    done = subprocess.run([sys.executable, "bench/at_size.py", "--users", "300", "--images", "40000", "--audit",
                           "80000", "--requests", "1", "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "SDWEB_TEST_POSTGRES": POSTGRES})
    assert done.returncode == 0, done.stderr[-3000:]
    pages = json.loads(done.stdout.strip().splitlines()[-1])
    assert {name: pages[name]["scans"] for name in INDEXED} == {name: [] for name in INDEXED}
