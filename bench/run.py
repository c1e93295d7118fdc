"""The benchmark harness: ``make bench`` (``python -m bench.run``).

Starts the servers on loopback, drives them with wrk, and writes
``bench/results/<date>.json`` and the tables of ``docs/benchmarks.md``.
Bounded: about 8 minutes. Every figure is also given as a ratio to the bare
ASGI app measured in the same run, same server, same worker count and
connection count, same load generator (the absolute numbers move 10-30 %
from run to run on a shared machine; the ratios much less).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.peers import PEERS, serving
from bench.report import write_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
VENV = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/0"
UNLIMITED = "100000000/10 seconds"  # the in-memory limiter runs, but never refuses
QUOTA = {"limit": 10**12, "period": "month"}  # counted on every request, never reached


@dataclass
class Run:
    config: str
    workers: int
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int


@dataclass
class Results:
    date: str
    machine: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def installed(program: str) -> str | None:
    """The path of ``program``, after installing its Debian package (of the
    same name) if it is missing; None when it cannot be had. Installing
    needs root; a Debian nginx package may start its own service, which is
    stopped at once (port 80 is not ours to take)."""
    found = shutil.which(program)
    if found:
        return found
    print(f"installing {program} (Debian package)...", flush=True)
    install = ["apt-get", "install", "-y", "-q", program]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if subprocess.run(install, capture_output=True, env=env, check=False).returncode:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
            subprocess.run(install, capture_output=True, env=env, check=False)
    except OSError:  # no apt-get here
        return None
    if program == "nginx" and Path("/run/nginx.pid").exists():
        subprocess.run(["nginx", "-s", "stop"], capture_output=True, check=False)
    return shutil.which(program)


def ensure_wrk() -> str:
    found = installed("wrk")
    if not found:
        raise SystemExit("wrk is not available and could not be installed")
    return found


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(
    url: str, connections: int, seconds: int, script: Path | None = None, header: str | None = None
) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    if header is not None:
        command += ["-H", header]
    finished = subprocess.run([*command, url], capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"wrk failed on {url}: {finished.stdout}{finished.stderr}")
    output = finished.stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, flags=re.M))
    requests = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": _seconds(latency["50"]) * 1000 if "50" in latency else float("nan"),
        "p99_ms": _seconds(latency["99"]) * 1000 if "99" in latency else float("nan"),
        "requests": int(requests.group(1)) if requests else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


@contextlib.contextmanager
def process(
    command: list[str], env: dict[str, str], health: str, log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{command[:3]} exited: see {log}")
        try:
            if httpx.get(health, timeout=1).status_code < 500:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{command[:3]} did not start: see {log}")
        time.sleep(0.1)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str, keystile: Path | None = None) -> dict[str, Any]:
    """``keystile ARGS --json`` (this checkout's, or the ``keystile``
    executable given): the ``data`` of its output."""
    out = subprocess.run(
        [str(keystile or VENV / "keystile"), *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, Any] = json.loads(out.stdout)["data"]
    return data


def lua_post(path: Path, body: str, key: str) -> Path:
    path.write_text(
        f"""wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""
    )
    return path


def lua_forward_auth(path: Path, key: str, uri: str) -> Path:
    """``GET /v1/auth`` as a proxy asks it: the key and the original request
    (``GET uri``) in the forwarded headers (contract §15)."""
    path.write_text(
        f"""wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.headers["X-Forwarded-Method"] = "GET"
wrk.headers["X-Forwarded-Uri"] = "{uri}"
"""
    )
    return path


def lua_create(path: Path, key: str) -> Path:
    """POST /v1/api-keys with a name never used before (per run and request)."""
    path.write_text(
        f"""local n = 0
local tag = ""
init = function(args)
  math.randomseed(os.time() + os.clock() * 1000000)
  tag = string.format("%x%x", os.time(), math.random(0, 2147483647))
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{{"name": "bench-' .. tag .. '-' .. n .. '", "permissions": ["read:contacts"]}}')
end
"""
    )
    return path


def lua_verify_many(path: Path, caller: str, keys: list[str]) -> Path:
    """POST /v1/keys/verify cycling through many distinct keys."""
    table = ",".join(f'"{k}"' for k in keys)
    path.write_text(
        f"""local keys = {{{table}}}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {caller}"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{{"key": "' .. keys[(n % #keys) + 1] .. '"}}')
end
"""
    )
    return path


def psql(sql: str, database: str = "test") -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", sql],
        check=True,
        capture_output=True,
    )


def profile(
    pid: int,
    url: str,
    connections: int,
    seconds: int,
    script: Path | None,
    header: str | None,
    raw: Path,
) -> list[tuple[str, float]]:
    """Where a keystile process spends its time under load: self time by module."""
    load = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds + 3}s", *(["-s", str(script)] if script else []),
         *(["-H", header] if header else []), url],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.5)
    subprocess.run(
        [str(VENV / "py-spy"), "record", "--gil", "-p", str(pid), "-d", str(seconds), "-r", "250", "-f", "raw", "-o", str(raw)],
        capture_output=True, check=False,
    )  # fmt: skip
    load.wait()
    totals: dict[str, float] = {}
    count = 0.0
    if not raw.exists():
        return []
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        match = re.search(r"\((.*?):\d+\)", leaf)
        where = match.group(1) if match else (leaf or "native")
        if "site-packages/" in where:
            where = where.split("site-packages/")[1].rsplit(".", 1)[0]
        elif "/keystile/" in where:
            where = "keystile/" + where.split("/keystile/", 1)[1].rsplit(".", 1)[0]
        elif "python3" in where:
            where = "stdlib: " + where.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        totals[where] = totals.get(where, 0.0) + float(n)
        count += float(n)
    raw.unlink()
    top = sorted(totals.items(), key=lambda item: -item[1])[:12]
    return [(name, round(100 * n / count, 1)) for name, n in top]


def worker_of(pid: int) -> int:
    """The worker process of ``keystile serve`` ``pid`` (it runs its worker
    under a supervisor), else ``pid`` itself."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    return pid


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="duration of each measurement")
    parser.add_argument("--memory-requests", type=int, default=1_000_000)
    options = parser.parse_args()
    ensure_wrk()
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    results = Results(
        date=dt.date.today().isoformat(),
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": round(load_before, 2),
            "commit": commit,
            "load_generator": "wrk -t1 (one thread), on the same 2 cores",
            "seconds_per_measurement": options.seconds,
        },
    )
    work = Path(tempfile.mkdtemp(prefix="keystile-bench-"))
    database = f"ks_bench_{uuid.uuid4().hex[:8]}"
    redis_prefix = f"ksbench-{uuid.uuid4().hex[:8]}"
    psql(f"CREATE DATABASE {database}")
    secret_key = subprocess.run(
        [str(VENV / "keystile"), "secret-key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        for workers in (1, 2):
            bare_port = free_port()
            routes = work / "routes.toml"
            routes.write_text(
                f'[[routes]]\nprefix = "/v1/contacts"\nmethods = ["GET"]\nscope = "read:contacts"\nupstream = "http://127.0.0.1:{bare_port}"\n'
            )
            sqlite_dir = work / f"sqlite-{workers}"
            common = {"KEYSTILE_ROUTES": str(routes), "KEYSTILE_TIER_STANDARD": UNLIMITED}
            env_mem = base_env(KEYSTILE_DATA_DIR=str(sqlite_dir), **common)
            env_redis = base_env(
                KEYSTILE_DATA_DIR=str(sqlite_dir),
                KEYSTILE_REDIS_URL=REDIS,
                KEYSTILE_REDIS_PREFIX=redis_prefix,
                **common,
            )
            env_pg = base_env(
                KEYSTILE_DATABASE_URL=f"{PG}/{database}", KEYSTILE_SECRET_KEY=secret_key,
                KEYSTILE_KEY_CACHE_SIZE="0", **common,
            )  # fmt: skip
            keys: dict[str, str] = {}
            for name, env in (("sqlite", env_mem), ("pg", env_pg)):
                account = cli(env, "accounts", "create", f"bench {name}")["id"]
                keys[name] = cli(
                    env, "keys", "create", "--account", account, "--name", f"bench-{workers}",
                    "--permission", "read:contacts", "--permission", "verify:keys", "--permission", "admin:api_keys",
                )["key"]  # fmt: skip
            ports = {name: free_port() for name in ("mem", "redis", "pg")}
            shaped_port = free_port()
            serve = [str(VENV / "keystile"), "serve", "--workers", str(workers), "--port"]
            bare_cmd = [str(VENV / "python"), "-m", "uvicorn", "bench.apps:bare", "--port", str(bare_port),
                        "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
                        "--log-level", "warning", "--no-access-log"]  # fmt: skip
            with contextlib.ExitStack() as servers:
                servers.enter_context(
                    process(
                        bare_cmd, base_env(), f"http://127.0.0.1:{bare_port}/", work / "bare.log"
                    )
                )
                shaped_cmd = [*bare_cmd[:3], "bench.apps:shaped", "--port", str(shaped_port)]
                shaped_cmd += bare_cmd[6:]
                servers.enter_context(
                    process(
                        shaped_cmd,
                        base_env(),
                        f"http://127.0.0.1:{shaped_port}/",
                        work / "shaped.log",
                    )
                )
                mem = servers.enter_context(
                    process(
                        [*serve, str(ports["mem"])],
                        env_mem,
                        f"http://127.0.0.1:{ports['mem']}/healthz",
                        work / "mem.log",
                    )
                )
                with_redis = servers.enter_context(
                    process(
                        [*serve, str(ports["redis"])],
                        env_redis,
                        f"http://127.0.0.1:{ports['redis']}/healthz",
                        work / "redis.log",
                    )
                )
                servers.enter_context(
                    process(
                        [*serve, str(ports["pg"])],
                        env_pg,
                        f"http://127.0.0.1:{ports['pg']}/healthz",
                        work / "pg.log",
                    )
                )
                # Rows (d) on the build before issue 19 too, for the target's ratio.
                from bench import baseline  # (it imports this module)

                before_url, before_key = servers.enter_context(
                    baseline.serving(env_pg, workers, work)
                )
                # nginx in front of the bare app: alone, and asking keystile
                # (examples/nginx/keystile.conf, forward auth: contract §15).
                from bench import proxies  # (it imports this module)

                alone = servers.enter_context(
                    proxies.nginx_alone(bare_port, work / f"nginx-alone-{workers}", workers=workers)
                )
                guarded = servers.enter_context(
                    proxies.nginx(
                        ports["mem"], bare_port, work / f"nginx-auth-{workers}", workers=workers
                    )
                )
                # A user's FastAPI app, alone and behind keystile_client's
                # middleware asking the memory-limiter keystile (issue #17).
                fastapi_ports = {"plain": free_port(), "protected": free_port()}
                client_env = base_env(
                    BENCH_KEYSTILE_URL=f"http://127.0.0.1:{ports['mem']}",
                    BENCH_SERVICE_KEY=keys["sqlite"],
                )
                for name, app_port in fastapi_ports.items():
                    app_cmd = [*bare_cmd[:3], "--factory", f"bench.apps:{name}_fastapi", "--port",
                               str(app_port), *bare_cmd[6:]]  # fmt: skip
                    servers.enter_context(
                        process(
                            app_cmd,
                            client_env,
                            f"http://127.0.0.1:{app_port}/openapi.json",
                            work / f"fastapi-{name}.log",
                        )
                    )
                # The peers a user would pick instead (issue #19), one worker each:
                # their own venvs, their own key headers.
                peer_plan: list[tuple[str, str, Path | None, str | None]] = []
                if workers == 1:
                    for name, peer in PEERS.items():
                        peer_url, key_header = servers.enter_context(
                            serving(name, work / f"peer-{name}")
                        )
                        peer_plan.append((peer.config, f"{peer_url}/v1/contacts", None, key_header))
                verify_sqlite = lua_post(
                    work / "verify-sqlite.lua", json.dumps({"key": keys["sqlite"]}), keys["sqlite"]
                )
                verify_pg = lua_post(
                    work / "verify-pg.lua", json.dumps({"key": keys["pg"]}), keys["pg"]
                )
                sqlite_auth = f"Authorization: Bearer {keys['sqlite']}"
                pg_auth = f"Authorization: Bearer {keys['pg']}"
                # keystile and the bare app on granian (issue #19, item 1).
                from bench.front_ends import granian_rows  # (it imports this module)

                front_end_plan = (
                    granian_rows(servers, work, env_mem, base_env(), verify_sqlite, sqlite_auth)
                    if workers == 1
                    else []
                )
                plan: list[tuple[str, str, Path | None, str | None]] = [
                    ("a. bare ASGI", f"http://127.0.0.1:{bare_port}/", None, None),
                    (
                        "a'. bare ASGI, verify-shaped",
                        f"http://127.0.0.1:{shaped_port}/",
                        verify_sqlite,
                        None,
                    ),
                    (
                        "b. proxy, memory limiter",
                        f"http://127.0.0.1:{ports['mem']}/v1/contacts",
                        None,
                        sqlite_auth,
                    ),
                    (
                        "b. verify, memory limiter",
                        f"http://127.0.0.1:{ports['mem']}/v1/keys/verify",
                        verify_sqlite,
                        None,
                    ),
                    (
                        "b. forward auth, memory limiter",
                        f"http://127.0.0.1:{ports['mem']}/v1/auth",
                        lua_forward_auth(work / "auth.lua", keys["sqlite"], "/v1/contacts/1"),
                        None,
                    ),
                    (
                        "c. proxy, Redis limiter",
                        f"http://127.0.0.1:{ports['redis']}/v1/contacts",
                        None,
                        sqlite_auth,
                    ),
                    (
                        "c. verify, Redis limiter",
                        f"http://127.0.0.1:{ports['redis']}/v1/keys/verify",
                        verify_sqlite,
                        None,
                    ),
                    (
                        "d. proxy, PostgreSQL cold",
                        f"http://127.0.0.1:{ports['pg']}/v1/contacts",
                        None,
                        pg_auth,
                    ),
                    (
                        "d. verify, PostgreSQL cold",
                        f"http://127.0.0.1:{ports['pg']}/v1/keys/verify",
                        verify_pg,
                        None,
                    ),
                    *baseline.cold_rows(before_url, before_key, work),
                    (
                        "e. creates, SQLite",
                        f"http://127.0.0.1:{ports['mem']}/v1/api-keys",
                        lua_create(work / "create-sqlite.lua", keys["sqlite"]),
                        None,
                    ),
                    (
                        "e. creates, PostgreSQL",
                        f"http://127.0.0.1:{ports['pg']}/v1/api-keys",
                        lua_create(work / "create-pg.lua", keys["pg"]),
                        None,
                    ),
                    (
                        "f. bare upstream, direct",
                        f"http://127.0.0.1:{bare_port}/v1/contacts",
                        None,
                        None,
                    ),
                    ("g. nginx alone, to the bare app", f"{alone}/v1/contacts", None, None),
                    (
                        "g. nginx + keystile forward auth",
                        f"{guarded}/v1/contacts",
                        None,
                        sqlite_auth,
                    ),
                    (
                        "h. FastAPI app, unprotected",
                        f"http://127.0.0.1:{fastapi_ports['plain']}/v1/contacts",
                        None,
                        None,
                    ),
                    (
                        "h. FastAPI app + KeystileMiddleware",
                        f"http://127.0.0.1:{fastapi_ports['protected']}/v1/contacts",
                        None,
                        sqlite_auth,
                    ),
                    *peer_plan,
                    *front_end_plan,
                ]
                for _, url, script, header in plan:  # warm up every server and path
                    wrk(url, 16, 1, script, header)
                for connections in (16, 64):
                    for config, url, script, header in plan:
                        measured = wrk(url, connections, options.seconds, script, header)
                        run = Run(
                            config=config, workers=workers, connections=connections, **measured
                        )
                        results.runs.append(run)
                        print(
                            f"{workers}w {connections:>2}c {config:<28} {run.rps:>9.0f} rps  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  non-2xx {run.non_2xx}",
                            flush=True,
                        )
                if workers == 1:
                    for config, url, script, header in plan[2:6]:
                        pid = worker_of(mem.pid if "memory" in config else with_redis.pid)
                        results.profiles[config] = profile(
                            pid, url, 64, 5, script, header, work / "profile.raw"
                        )
        memory_test(results, work, options.memory_requests)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        cleanup_redis(redis_prefix)
        shutil.rmtree(work, ignore_errors=True)
    results.machine["duration_seconds"] = round(time.monotonic() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{results.date}.json"
    out.write_text(json.dumps(asdict(results), indent=2) + "\n")
    write_report(asdict(results), ROOT / "docs" / "benchmarks.md")
    print(
        f"wrote {out.relative_to(ROOT)} and docs/benchmarks.md in {results.machine['duration_seconds']} s"
    )


def cleanup_redis(prefix: str, url: str = REDIS) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def memory_test(results: Results, work: Path, requests: int) -> None:
    """Resident memory after ``requests`` verifications of 10,000 distinct keys,
    each with a monthly quota, so the quota counters and the usage meter
    (issue #14) hold an entry per key, as in production."""
    import asyncio

    from keystile.accounts.service import AccountService
    from keystile.keys import tokens
    from keystile.keys.service import KeyService
    from keystile.keys.validation import check_new_key
    from keystile.settings import Settings
    from keystile.storage.sql import migrate
    from keystile.storage.sql.database import open_storage

    data = work / "memory"
    settings = Settings(data_dir=data)
    migrate.upgrade(settings.database)

    async def make_keys() -> tuple[str, list[str]]:
        storage = open_storage(settings.database)
        service = KeyService(storage, prefix=settings.key_prefix)
        account = await AccountService(storage).create("memory")
        secrets = []
        async with storage.transaction() as uow:
            for n in range(10_001):
                permissions = ("verify:keys",) if n == 0 else ("read:contacts",)
                new = check_new_key(name=f"k{n}", permissions=permissions, description=None,
                                    rate_limit_tier=None, expires_at=None, catalog=settings.catalog,
                                    now=service.now(), quota=QUOTA)  # fmt: skip
                issued = await service.issue(uow, account.id, new, caller=None)
                secrets.append(issued.secret)
        await storage.close()
        assert all(tokens.is_well_formed(s, "wbk") for s in secrets)
        return secrets[0], secrets[1:]

    caller, others = asyncio.run(make_keys())
    # The caller is one of the 10,000 verified keys: 10,000 distinct keys in
    # all, so they fit the default cache (10,001 cycling through an LRU of
    # 10,000 would miss every time).
    keys = [caller, *others[:-1]]
    script = lua_verify_many(work / "verify-many.lua", caller, keys)
    port = free_port()
    env = base_env(
        KEYSTILE_DATA_DIR=str(data), KEYSTILE_TIER_STANDARD=UNLIMITED, KEYSTILE_TIER_HIGH=UNLIMITED
    )
    with process(
        [str(VENV / "keystile"), "serve", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/healthz",
        work / "memory.log",
    ) as proc:
        before = rss_kib(worker_of(proc.pid))
        done = 0
        began = time.monotonic()
        while done < requests:
            measured = wrk(f"http://127.0.0.1:{port}/v1/keys/verify", 64, 15, script)
            done += measured["requests"]
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        cached = re.search(r"^keystile_key_cache_entries ([\d.e+]+)$", metrics, flags=re.M)
        results.memory = {
            "verifications": done,
            "distinct_keys": len(keys),
            "seconds": round(time.monotonic() - began),
            "rss_before_mib": round(before / 1024, 1),
            "rss_after_mib": round(rss_kib(worker_of(proc.pid)) / 1024, 1),
            "cache_entries": int(float(cached.group(1))) if cached else None,
            "cache_limit": Settings().key_cache_size,
        }
    print(f"memory: {results.memory}", flush=True)


if __name__ == "__main__":
    main()
