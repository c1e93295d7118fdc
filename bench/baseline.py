"""The build before issue 19 beside the current one in ``make bench``.

Issue 19 asks the PostgreSQL cold path (rows (d): the key cache off, so
every request looks its key up) for three times the throughput of the build
before it. Absolute figures move 10-30 % between runs on this machine, so
the (d) rows are also measured on that build (commit ``8a0853a``, built once
into ``.bench-cache/builds/`` by ``bench/variants.py``), interleaved with the
others in the same run, and the report takes their ratio.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.variants import bin_dir

BEFORE_ISSUE_19 = "8a0853a"
SUFFIX = ", before issue 19"
COLD_PROXY = "d. proxy, PostgreSQL cold"
COLD_VERIFY = "d. verify, PostgreSQL cold"


def before(config: str) -> str:
    """The name of ``config``'s row measured on the build before issue 19."""
    return config + SUFFIX


@contextlib.contextmanager
def serving(env: dict[str, str], workers: int, work: Path) -> Iterator[tuple[str, str]]:
    """``keystile serve`` of the build before issue 19 with ``env`` (the
    current build's configuration of rows (d)) on a PostgreSQL database of
    its own, dropped afterwards: its base URL, and a key holding
    ``read:contacts`` and ``verify:keys``."""
    from bench import run  # (it imports this module)

    keystile = bin_dir(BEFORE_ISSUE_19) / "keystile"
    database = f"ks_bench_before_{uuid.uuid4().hex[:8]}"
    run.psql(f"CREATE DATABASE {database}")
    try:
        env = {**env, "KEYSTILE_DATABASE_URL": f"{run.PG}/{database}"}
        account = run.cli(env, "accounts", "create", "bench before", keystile=keystile)["id"]
        key = run.cli(
            env, "keys", "create", "--account", account, "--name", f"bench-{workers}",
            "--permission", "read:contacts", "--permission", "verify:keys", keystile=keystile,
        )["key"]  # fmt: skip
        port = run.free_port()
        command = [str(keystile), "serve", "--workers", str(workers), "--port", str(port)]
        health = f"http://127.0.0.1:{port}/healthz"
        with run.process(command, env, health, work / f"pg-before-{workers}.log", cwd=work):
            yield f"http://127.0.0.1:{port}", key
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def cold_rows(url: str, key: str, work: Path) -> list[tuple[str, str, Path | None, str | None]]:
    """The (d) rows of the plan of ``bench/run.py``, served at ``url``."""
    from bench import run

    script = run.lua_post(work / "verify-pg-before.lua", json.dumps({"key": key}), key)
    return [
        (before(COLD_PROXY), f"{url}/v1/contacts", None, f"Authorization: Bearer {key}"),
        (before(COLD_VERIFY), f"{url}/v1/keys/verify", script, None),
    ]


def cold_ratios(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    """Rows (d) of the current build over the same rows of the build before
    issue 19 (1 worker, 64 connections): ``{"proxy": …, "verify": …}``, or
    None when the run did not measure both."""
    rps = {r["config"]: float(r["rps"]) for r in runs
           if r["workers"] == 1 and r["connections"] == 64}  # fmt: skip
    ratios = {}
    for name, config in (("proxy", COLD_PROXY), ("verify", COLD_VERIFY)):
        if not rps.get(before(config)) or config not in rps:
            return None
        ratios[name] = rps[config] / rps[before(config)]
    return ratios
