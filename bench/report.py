"""Writes docs/benchmarks.md from a results file (``bench/results/<date>.json``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench import front_ends
from bench.baseline import BEFORE_ISSUE_19, cold_ratios
from bench.peers import PEERS

COMPARING = "## Comparing two builds or two configurations"

TARGETS_NOTE = """\
## Issue 19's targets: what stands in the way

- **PostgreSQL cold path (met).** Key lookups run as prepared statements on
  an asyncpg pool of their own (docs/deployment.md). Through SQLAlchemy a
  lookup cost the worker about 1 ms of CPU, and the read pool opened about
  50 connections a second under 64 concurrent requests; now about 90 µs.
- **Creates (met).** One statement inserts the key and its audit event and
  reads the subscribed endpoints (PostgreSQL); SQLite runs them on the
  transaction's own connection. Server CPU per create fell from about
  2,950 to 1,260 µs (SQLite) and from 3,800 to 2,300 µs (PostgreSQL, cache
  off, before the lookup pool), measured on 2026-11-30. Creates are
  absolute targets, so they move with the machine: the run of 2026-11-30,
  on a machine that gave the bare app 0.66 of what it gives it here, had
  1,017 (SQLite) and 688 (PostgreSQL). The same build measured against the
  current one on 2026-12-01 made as many creates (`make bench-compare`),
  so the difference is the machine, not the code. PostgreSQL's figure is
  with the key cache off (the cold server of rows d): the default
  configuration, cache on, makes about 1.18 times as many.
- **verify, the gateway and verify's p99.** The largest single item is
  the response's `send()`: `keystile/server/output.py`, where it is made,
  takes a quarter of verify's samples in the profiles above, and 18-31 %
  of the proxy's and forward auth's. The kernel's loopback path is
  probably dearer than usual here: this machine is a Firecracker VM, and a
  send that wakes the sleeping load generator on the other vCPU likely
  costs a VM exit (py-spy cannot show that; the bare app answers fast
  enough that wrk never sleeps).
  - Done: one send per response instead of uvicorn's two (server CPU per
    verify 148 to 139 µs on 2026-11-30), a young-generation collection
    every 20,000 allocations (to 134 µs), and the body deadline without a
    weak reference per call. Together about 1.2 times the verifies of
    `8a0853a` (`make bench-compare`, 2026-11-30; the compare runs quoted
    in this section were not kept in `bench/results/`).
  - Outside the send, keystile's time is spread over many functions: in a
    function-level py-spy profile of verify (2026-12-01) one function
    besides the send took more than 2 % of the samples,
    `http/deadlines.within` at 6.8 %, all on its `get_running_loop()`
    line, which costs 0.16 µs in isolation; not explained. `strace -c` of
    the worker under load shows no memory mapping per request, and one
    `read`, one `write` and two `getpid` (asyncio's running-loop check)
    per verify: the system calls are already the bare app's; the rest is
    Python.
  - **verify ≥ 0.5**: keystile's CPU per verify would have to be 2 times
    the bare app's, against about 4.5 times now (83 µs a verify on this
    run's machine). A compiled front end alone does not get there: on
    granian keystile's verify is 0.27 of the bare app on uvicorn (the
    front-end table). Next steps, in order: a compiled HTTP front end
    that keeps keystile's limits (granian lacks them: docs/deployment.md);
    then the key check, rate limit and response of verify in one compiled
    function behind the same Protocols, so that a cached verify runs no
    Python per request.
  - **gateway ≥ 0.4**: a proxied request makes two HTTP exchanges, the
    client's and the upstream's, so it pays the send twice: in the proxy's
    profile, the output is 17.7 % and the upstream client
    (`gateway/client.py`, `proxy.py`, `connection.py`) another 16.8 %.
    The gateway's CPU per request would have to be 2.5 times the direct
    call's, against about 4.5 times now; on granian it is 0.25 of the
    direct call. Two workers do not help on 2 cores (0.22 of the direct
    call). Next step: the upstream exchange in compiled code too (the
    compiled front end's own client, streaming as now), after the front
    end above.
  - **verify's p99 at 16 connections ≤ 2 × the bare app's**: 2.95 ms
    against 1.33 ms, 2.22 times. The profiles are at 64 connections; the
    work per request is the same at 16, where every request waits for the
    15 ahead of it, so the p50 is 16 over the throughput and the p99 about
    2.3 times that. The garbage collector is not the tail: with its
    thresholds at 700/10/10, 5,000/10/10, 20,000/10/10 and 20,000/50/100,
    verify's p99 at 16 connections was 2.65-2.84 ms and the throughput
    within 4 % (`make bench-compare`, 5 rounds, 2026-12-01; the best is at
    the edge of 2 × 1.33 ms, but the bare app was not measured in that
    run). The target needs about 11 % more verifies a second or a shorter
    tail: a smaller step than the throughput target's, on the same road.
"""


def _table(runs: list[dict[str, Any]], workers: int) -> list[str]:
    by = {(r["config"], r["connections"]): r for r in runs if r["workers"] == workers}
    configs = list(dict.fromkeys(r["config"] for r in runs if r["workers"] == workers))
    lines = [
        f"### {workers} worker{'s' if workers > 1 else ''}",
        "",
        "| configuration | 16 conns: rps | p50 ms | p99 ms | ratio | 64 conns: rps | p50 ms | p99 ms | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in configs:
        cells = [config]
        for connections in (16, 64):
            run = by.get((config, connections))
            bare = by.get(("a. bare ASGI", connections))
            if run is None or bare is None:
                cells += ["", "", "", ""]
                continue
            cells += [
                f"{run['rps']:,.0f}",
                f"{run['p50_ms']:.2f}",
                f"{run['p99_ms']:.2f}",
                f"{run['rps'] / bare['rps']:.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [r for r in runs if r["workers"] == workers and (r["non_2xx"] or r["errors"])]
    lines.append("")
    if errors:
        lines.append(
            "Non-2xx or socket errors: "
            + ", ".join(
                f"{r['config']} @{r['connections']}: {r['non_2xx']}/{r['errors']}" for r in errors
            )
        )
    else:
        lines.append("Every response of every run was a 2xx; no socket errors.")
    return [*lines, ""]


def _targets(results: dict[str, Any]) -> list[str]:
    """The targets table: issue #19's (the first six) and the earlier ones
    still held, each measured in this run and marked met or not met."""
    runs = {(r["config"], r["workers"], r["connections"]): r for r in results["runs"]}

    def rps(config: str, connections: int = 64) -> float:
        run = runs.get((config, 1, connections))
        return float(run["rps"]) if run else 0.0

    def p99(config: str, connections: int) -> float:
        run = runs.get((config, 1, connections))
        return float(run["p99_ms"]) if run else 0.0

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    bare = rps("a. bare ASGI")
    verify = "b. verify, memory limiter"
    memory = results.get("memory", {})
    # (name, required, value, unit, met)
    rows: list[tuple[str, str, float, str, bool]] = []

    def at_least(name: str, minimum: float, value: float, unit: str = "") -> None:
        shown = f"{minimum:,.0f}" if minimum >= 10 else f"{minimum:g}"
        rows.append((name, f"≥ {shown}", value, unit, value >= minimum))

    at_least("(b) verify hot path, ratio to (a) the bare ASGI app on uvicorn", 0.5,
             ratio(rps(verify), bare))  # fmt: skip
    verify_p99, bare_p99 = p99(verify, 16), p99("a. bare ASGI", 16)
    rows.append(
        (
            f"(b) verify p99 at 16 connections, ratio to (a)'s p99 "
            f"({verify_p99:.2f} ms and {bare_p99:.2f} ms)",
            "≤ 2",
            ratio(verify_p99, bare_p99),
            "",
            0 < verify_p99 <= 2 * bare_p99,
        )
    )
    at_least("proxy hot path (the built-in gateway), ratio to (f) the direct call", 0.4,
             ratio(rps("b. proxy, memory limiter"), rps("f. bare upstream, direct")))  # fmt: skip
    at_least("(e) creates per second, SQLite", 1000, rps("e. creates, SQLite"))
    at_least("(e) creates per second, PostgreSQL", 800, rps("e. creates, PostgreSQL"))
    cold = cold_ratios(results["runs"])
    if cold is not None:  # rows (d) were also measured on the build before issue 19
        at_least(f"(d) PostgreSQL cold path, ratio to the build before issue 19 ({BEFORE_ISSUE_19}): "
                 f"proxy {cold['proxy']:.2f}, verify {cold['verify']:.2f}; the smaller",
                 3, min(cold.values()))  # fmt: skip
    at_least("(c) verify with the Redis limiter, ratio to (a)", 0.20,
             ratio(rps("c. verify, Redis limiter"), bare))  # fmt: skip
    at_least("(b) forward auth (`/v1/auth`), ratio to (b) verify", 0.9,
             ratio(rps("b. forward auth, memory limiter"), rps(verify)))  # fmt: skip
    at_least("(h) FastAPI app + KeystileMiddleware (cache hits), ratio to the app unprotected",
             0.8, ratio(rps("h. FastAPI app + KeystileMiddleware"),
                        rps("h. FastAPI app, unprotected")))  # fmt: skip
    resident = float(memory.get("rss_after_mib", 0.0))
    rows.append(
        (
            "resident memory after 1,000,000 verifications of 10,000 keys",
            "< 200 MB",
            resident,
            " MiB",
            0 < resident < 200,
        )
    )
    lines = [
        "## Targets (1 worker, 64 connections; the p99 row at 16)",
        "",
        "| target | required | measured | |",
        "|---|---|---:|---|",
    ]
    for name, required, value, unit, met in rows:
        shown = f"{value:,.2f}" if value < 10 else f"{value:,.0f}"
        if unit:
            shown = f"{value:,.1f}{unit}"
        lines.append(f"| {name} | {required} | {shown} | {'met' if met else '**not met**'} |")
    return [*lines, "", *_front_ends(results)]


def _front_ends(results: dict[str, Any]) -> list[str]:
    """uvicorn against granian (issue #19, item 1): the bare app and keystile
    on each, one worker, and keystile's ratio to the bare app on the same
    front end. Empty for a run without the granian rows."""
    runs = {(r["config"], r["workers"], r["connections"]): r for r in results["runs"]}
    pairs = [
        ("verify", "b. verify, memory limiter", front_ends.VERIFY),
        ("proxy", "b. proxy, memory limiter", front_ends.PROXY),
    ]
    if (front_ends.VERIFY, 1, 64) not in runs:
        return []
    lines = [
        "### The front end: uvicorn and granian",
        "",
        "The same keystile (`KEYSTILE_SERVER=granian` for the second) and the same bare app "
        "on each front end, one worker, in this run. keystile's ratio to the bare app on its "
        "own front end says how much of the gap is keystile's own work.",
        "",
        "| connections | bare ASGI: uvicorn, granian | bare RSGI: granian | "
        "keystile: uvicorn, granian | keystile / bare: uvicorn, granian | "
        "keystile on granian / bare on uvicorn |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for connections in (16, 64):
        bare_u = runs.get(("a. bare ASGI", 1, connections), {}).get("rps", 0.0)
        bare_g = runs.get((front_ends.BARE_ASGI, 1, connections), {}).get("rps", 0.0)
        rsgi = runs.get((front_ends.BARE_RSGI, 1, connections), {}).get("rps", 0.0)
        for name, on_uvicorn, on_granian in pairs:
            ks_u = runs.get((on_uvicorn, 1, connections), {}).get("rps", 0.0)
            ks_g = runs.get((on_granian, 1, connections), {}).get("rps", 0.0)
            if not (bare_u and bare_g and ks_u and ks_g):
                continue
            lines.append(
                f"| {connections}, {name} | {bare_u:,.0f}, {bare_g:,.0f} | {rsgi:,.0f} | "
                f"{ks_u:,.0f}, {ks_g:,.0f} | {ks_u / bare_u:.2f}, {ks_g / bare_g:.2f} | "
                f"{ks_g / bare_u:.2f} |"
            )
    return [*lines, ""]


def _forward_auth(results: dict[str, Any]) -> list[str]:
    """nginx + forward auth against nginx alone and against keystile's own
    gateway, in the same run (issue #16): ratios of throughput, and p99."""
    runs = {(r["config"], r["workers"], r["connections"]): r for r in results["runs"]}
    configs = {
        "nginx alone": "g. nginx alone, to the bare app",
        "nginx + forward auth": "g. nginx + keystile forward auth",
        "keystile's gateway": "b. proxy, memory limiter",
    }
    lines = [
        "## Forward authentication beside a proxy",
        "",
        "The same bare app behind nginx alone, behind nginx asking keystile (`/v1/auth`, "
        "`examples/nginx/keystile.conf`), and behind keystile's own gateway, in one run.",
        "",
        "| workers, connections | nginx alone: rps, p99 ms | nginx + forward auth: rps, p99 ms "
        "| keystile's gateway: rps, p99 ms | forward auth / nginx alone | forward auth / gateway |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for workers in (1, 2):
        for connections in (16, 64):
            got = {
                name: runs.get((config, workers, connections)) for name, config in configs.items()
            }
            if not all(got.values()):
                continue
            rps = {name: float(run["rps"]) for name, run in got.items() if run}
            cells = [f"{rps[name]:,.0f}, {got[name]['p99_ms']:.2f}" for name in configs]  # type: ignore[index]
            guarded = rps["nginx + forward auth"]
            to_alone, to_gateway = guarded / rps["nginx alone"], guarded / rps["keystile's gateway"]
            lines.append(
                f"| {workers}, {connections} | "
                + " | ".join(cells)
                + f" | {to_alone:.2f} | {to_gateway:.2f} |"
            )
    return [*lines, ""]


# keystile's configurations set against each peer: (column, config).
KEYSTILE_BESIDE_PEERS = (
    ("gateway", "b. proxy, memory limiter"),
    ("verify", "b. verify, memory limiter"),
    ("FastAPI + KeystileMiddleware", "h. FastAPI app + KeystileMiddleware"),
)


def peer_ratios(
    runs: list[dict[str, Any]], peer_config: str, connections: int
) -> dict[str, float] | None:
    """keystile's throughput over ``peer_config``'s, for each configuration of
    :data:`KEYSTILE_BESIDE_PEERS` measured (1 worker, ``connections``); None
    when the peer was not measured."""
    rps = {r["config"]: float(r["rps"]) for r in runs
           if r["workers"] == 1 and r["connections"] == connections}  # fmt: skip
    peer = rps.get(peer_config)
    if not peer:
        return None
    return {column: rps[config] / peer for column, config in KEYSTILE_BESIDE_PEERS if config in rps}


def _peers(results: dict[str, Any]) -> list[str]:
    """(i) the peers a user would pick instead, against keystile in the same
    run (issue #19): their throughput and p99, and keystile's ratio to each."""
    runs = {(r["config"], r["workers"], r["connections"]): r for r in results["runs"]}
    columns = [column for column, _ in KEYSTILE_BESIDE_PEERS]
    lines = [
        "## (i) Against the peers",
        "",
        "What a user would run instead of keystile, installed from PyPI (pinned, "
        "`bench/peers.py`) in their own venvs and measured in the same run, one worker "
        "process each, `GET /v1/contacts` with a valid key. keystile/peer is keystile's "
        "throughput over the peer's: above 1, keystile answers more requests per second.",
        "",
    ]
    for peer in PEERS.values():
        lines += [f"- **{peer.title}**: {peer.per_request}"]
    lines += [
        "- keystile's gateway authenticates the key (cache, revocation counter, rate limit), "
        "forwards the request to the bare app over HTTP and relays its response; verify "
        "checks two keys (the caller's and the one verified) and answers JSON; both write "
        "an access line and count usage.",
        "",
        "| peer | connections | peer: rps, p99 ms | "
        + " | ".join(f"{column} / peer" for column in columns)
        + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for peer in PEERS.values():
        for connections in (16, 64):
            run = runs.get((peer.config, 1, connections))
            ratios = peer_ratios(results["runs"], peer.config, connections)
            if run is None or ratios is None:
                continue
            cells = [f"{ratios[column]:.2f}" if column in ratios else "" for column in columns]
            lines.append(
                f"| {peer.title} | {connections} | "
                f"{run['rps']:,.0f}, {run['p99_ms']:.2f} | " + " | ".join(cells) + " |"
            )
    return [*lines, ""]


def _kept(path: Path) -> str:
    """What ``make bench`` does not write but must keep: the part of the
    file from the ``COMPARING`` heading on (how to compare builds, and every
    comparison's own section, written by ``bench.compare.write_section``)."""
    text = path.read_text() if path.exists() else ""
    at = text.find(f"\n{COMPARING}\n")
    return text[at:] if at >= 0 else ""


def write_report(results: dict[str, Any], path: Path) -> None:
    """Write ``path`` from ``results``, keeping its comparisons part."""
    machine = results["machine"]
    memory = results.get("memory", {})
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {results['date']} (commit `{machine.get('commit', '?')}`); "
        f"raw data in `bench/results/{results['date']}.json`. Regenerate with `make bench` "
        f"(about {max(1, round(machine.get('duration_seconds', 480) / 60))} minutes, loopback only).",
        "",
        "## Method",
        "",
        f"- Machine: {machine['cpus']} cores, Python {machine['python']}, {machine['platform']}; "
        f"load average before the run {machine['load_average_before']}.",
        f"- Load: {machine['load_generator']}, {machine['seconds_per_measurement']} s per "
        "measurement after a warm-up, at 16 and 64 connections. wrk uses 15-40 µs of CPU per "
        "request on the same cores, so light configurations are partly limited by it.",
        "- Servers: uvicorn with uvloop and httptools, `--workers 1` and `2`; keystile with its "
        "defaults (access log on, written to a file), the rate limiter running but set high enough "
        "never to refuse. The configurations are measured interleaved, and every figure is also "
        "given as a ratio to the bare ASGI app measured in the same run: absolute numbers move "
        "10-30 % from run to run on this shared machine, ratios much less.",
        "- (a) the bare ASGI app (a fixed 200); (b) an authenticated request on the hot path, key "
        "already seen: `GET /v1/contacts` through the gateway to the bare app, and "
        "`POST /v1/keys/verify`, and `GET /v1/auth` as a proxy's forward authentication asks it "
        "(contract §15); (c) the same with the Redis rate limiter; (d) the same on "
        "PostgreSQL with the key cache off, so every request looks its key up (the cold path), "
        f"also served by the build before issue 19 (`{BEFORE_ISSUE_19}`, its own server and "
        "database, the same settings) for the cold path's target; "
        "(e) `POST /v1/api-keys`, a new name per request; (f) the bare app called directly "
        "(what the proxy adds is the difference between (b) proxy and (f)); (g) nginx in front "
        "of the bare app, alone and with the shipped forward-auth example asking keystile "
        "(memory limiter) on every request; nginx runs as many worker processes as keystile; "
        "(h) a FastAPI app with one endpoint, alone and behind `keystile_client`'s "
        "`KeystileMiddleware` (one key: cache hits, verified with keystile once per 5 s TTL); "
        "(i) the peers a user would pick instead, one worker each (section (i) below). "
        "With one worker, the bare app (ASGI and RSGI) and keystile's verify and proxy also run "
        "on granian (`KEYSTILE_SERVER=granian`): the front-end table below the targets.",
        "",
        *_targets(results),
        *_forward_auth(results),
        *_peers(results),
        "## Results",
        "",
        *_table(results["runs"], 1),
        *_table(results["runs"], 2),
        "## Memory",
        "",
        f"{memory.get('verifications', 0):,} verifications (`POST /v1/keys/verify`) of "
        f"{memory.get('distinct_keys', 0):,} distinct keys, each with a monthly quota (so "
        "every verification is metered and counted against its key's quota), one worker: "
        "resident memory "
        f"{memory.get('rss_before_mib', 0)} MiB after start-up, {memory.get('rss_after_mib', 0)} MiB "
        f"after the run ({memory.get('seconds', 0)} s). The key cache held "
        f"{memory.get('cache_entries')} entries, its bound being `KEYSTILE_KEY_CACHE_SIZE` = "
        f"{memory.get('cache_limit')}: least recently used keys are dropped past it.",
        "",
        "## Where the time goes",
        "",
        "py-spy, 5 s at 64 connections, one worker: share of the process's CPU samples by module "
        "(self time).",
        "",
    ]
    for config, top in results.get("profiles", {}).items():
        lines += [f"**{config}**", ""]
        lines += [f"- {share:.1f} % {module}" for module, share in top]
        lines.append("")
    lines.append(TARGETS_NOTE)
    path.write_text("\n".join(lines) + _kept(path))


if __name__ == "__main__":
    write_report(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
