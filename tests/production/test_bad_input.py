"""Scenario 6: property-based bad input on PostgreSQL (the checks are in bad_input.py)."""

import json
import subprocess
import sys

from tests.support import ROOT


def test_bad_input_never_errors_charges_or_goes_unaudited(production):
    env = {**production.env, "SDWEB_API_RATE": "100000/min", "SDWEB_ACTIVE_JOB_CAP": "100000"}
    result = subprocess.run([sys.executable, "tests/production/bad_input.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    attempts = json.loads(result.stdout.strip().splitlines()[-1])
    assert min(attempts.values()) >= 100, attempts  # hypothesis really tried each endpoint
