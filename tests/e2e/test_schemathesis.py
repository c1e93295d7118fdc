"""Schemathesis against keystile's own /openapi.json, on a live server with a
valid admin key (issue #8): every operation, all of Schemathesis' checks.

Under CI=true each operation gets 1,000 generated cases (the full run);
elsewhere ``KEYSTILE_FUZZ_EXAMPLES`` (default 60) keeps `make test` quick.
Operations with few distinct inputs (no parameters) get fewer: Hypothesis
stops when it has tried every input it can make.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import cli_admin, keystile_env, serving

# Checks that contradict the contract, and why:
EXCLUDED_CHECKS = {
    # DELETE /v1/api-keys/{id} revokes: the key stays readable, with
    # "status": "revoked" (contract §4), so it is not "used after free".
    "use_after_free",
    # The schema cannot express every rule (a name of only spaces, control or
    # bidi characters, an expiry in the past, a scope the caller lacks), so
    # some schema-valid bodies are rightly refused with a documented 4xx.
    "positive_data_acceptance",
}


def examples() -> int:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return 1000
    return int(os.environ.get("KEYSTILE_FUZZ_EXAMPLES", "60"))


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    env = keystile_env(
        tmp_path / "data",
        KEYSTILE_TIER_STANDARD="100000000/10 seconds",
        KEYSTILE_AUTH_FAILURE_LIMIT="100000000/minute",
        KEYSTILE_ACCESS_LOG="false",
    )
    _, admin = cli_admin(
        env, "admin:api_keys", "verify:keys", "read:contacts", "write:contacts", "read:deals"
    )
    schemathesis = str(Path(sys.executable).parent / "schemathesis")
    with serving(env, log=tmp_path / "server.log") as url:
        result = subprocess.run(
            [
                schemathesis, "run", f"{url}/openapi.json",
                "--checks", "all",
                "--exclude-checks", ",".join(sorted(EXCLUDED_CHECKS)),
                "--header", f"Authorization: Bearer {admin}",
                "--max-examples", str(examples()),
                "--seed", "20261126",
                "--request-timeout", "30",
                "--no-color",
            ],
            cwd=tmp_path, capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log[-3000:]
