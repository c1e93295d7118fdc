"""The front-end comparison of ``make bench`` (issue #19, item 1): the bare
app and keystile on granian, beside the same on uvicorn.

Rows (one worker): the bare app on granian's ASGI and RSGI interfaces (what
granian alone costs for a fixed 200), and keystile's verify and proxy hot
paths with ``KEYSTILE_SERVER=granian`` (docs/deployment.md). The uvicorn
rows of the same run are the (a) and (b) rows.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

Row = tuple[str, str, Path | None, str | None]

BARE_ASGI = "a. bare ASGI on granian"
BARE_RSGI = "a. bare RSGI on granian"
VERIFY = "b. verify on granian, memory limiter"
PROXY = "b. proxy on granian, memory limiter"


def granian_rows(
    servers: contextlib.ExitStack,
    work: Path,
    keystile_env: dict[str, str],
    bare_env: dict[str, str],
    verify_script: Path,
    auth_header: str,
) -> list[Row]:
    """Start the granian servers on ``servers`` (stopped when it closes) and
    return their rows: (config, url, wrk script, header). ``keystile_env``
    is the memory-limiter keystile's environment (its database and keys)."""
    from bench.run import VENV, free_port, process  # (it imports this module's report)

    rows: list[Row] = []
    for config, interface, app in ((BARE_ASGI, "asgi", "bare"), (BARE_RSGI, "rsgi", "bare_rsgi")):
        port = free_port()
        command = [str(VENV / "python"), "-m", "granian", "--interface", interface,
                   "--loop", "uvloop", "--http", "1", "--workers", "1", "--no-access-log",
                   "--log-level", "warning", "--port", str(port), f"bench.apps:{app}"]  # fmt: skip
        url = f"http://127.0.0.1:{port}/"
        servers.enter_context(process(command, bare_env, url, work / f"granian-{interface}.log"))
        rows.append((config, url, None, None))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    servers.enter_context(
        process(
            [str(VENV / "keystile"), "serve", "--workers", "1", "--port", str(port)],
            {**keystile_env, "KEYSTILE_SERVER": "granian"},
            f"{base}/healthz",
            work / "keystile-granian.log",
        )
    )
    rows.append((VERIFY, f"{base}/v1/keys/verify", verify_script, None))
    rows.append((PROXY, f"{base}/v1/contacts", None, auth_header))
    return rows
