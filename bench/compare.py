"""Two builds, or two configurations of one build, measured in one run:
``make bench-compare ARGS='...'`` (``python -m bench.compare ...``).

Every variant (``--variant NAME=REF[:ENV=VALUE,...]``, see
``bench/variants.py``) gets its own ``keystile serve`` with its own database,
all running at once; each scenario (``bench/scenarios.py``) is then measured
in interleaved rounds, every variant once per round (A B, B A, A B, ...: the
order rotates unless ``--order fixed``), with wrk on loopback. Absolute
figures move 10-30 % on this shared machine; what one run can tell is the
ratio of each variant to the first, and the spread of the rounds shows how
far to trust it.

Writes a markdown table to stdout and ``bench/results/compare-<date>-<name>.json``;
``--docs`` also puts the table in docs/benchmarks.md, in a section of its own
(``write_section``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import run
from bench.machine import CpuWatch, tree_cpu_seconds
from bench.report import COMPARING
from bench.scenarios import PERMISSIONS, SCENARIOS, Bench, Scenario, Server, Target, routes_toml
from bench.variants import Variant, VariantError, bin_dir, describe, parse_variants

DOCS = run.ROOT / "docs" / "benchmarks.md"
BUSY_LOAD = 1.5  # 1-minute load average on this 2-core machine
BUSY_OTHERS = 0.5  # cores taken by other processes while a round runs
REFERENCE = "(reference)"


# -- the servers ---------------------------------------------------------------------------


def _serve(
    variant: Variant,
    bin_path: Path,
    stack: contextlib.ExitStack,
    work: Path,
    routes: Path,
    options: argparse.Namespace,
    cleanups: list[Callable[[], None]],
) -> Server:
    """Start ``variant``'s server on a database of its own, with a key holding
    every scope of ``PERMISSIONS``; ``cleanups`` gets what to remove after."""
    home = work / variant.name
    home.mkdir()
    keystile = bin_path / "keystile"
    env = run.base_env(
        KEYSTILE_ROUTES=str(routes),
        KEYSTILE_TIER_STANDARD=run.UNLIMITED,
        KEYSTILE_TIER_HIGH=run.UNLIMITED,
        KEYSTILE_REDIS_PREFIX=f"ksbench-{uuid.uuid4().hex[:8]}",
        KEYSTILE_DATA_DIR=str(home / "data"),
    )
    if options.database == "postgres":
        database = f"ks_cmp_{uuid.uuid4().hex[:8]}"
        run.psql(f"CREATE DATABASE {database}")
        cleanups.append(partial(run.psql, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        secret = subprocess.run(
            [str(keystile), "secret-key"], capture_output=True, text=True, check=True
        ).stdout.strip()
        env.update(KEYSTILE_DATABASE_URL=f"{run.PG}/{database}", KEYSTILE_SECRET_KEY=secret)
    env.update(variant.env)
    if "KEYSTILE_REDIS_URL" in env:
        cleanups.append(
            partial(run.cleanup_redis, env["KEYSTILE_REDIS_PREFIX"], env["KEYSTILE_REDIS_URL"])
        )
    scopes = [arg for scope in PERMISSIONS for arg in ("--permission", scope)]
    if quota := dict(variant.env).get("BENCH_KEY_QUOTA"):  # e.g. 1000000000/month: a quota
        scopes += ["--quota", quota]
    try:
        account = run.cli(env, "accounts", "create", f"bench {variant.name}", keystile=keystile)
        key = run.cli(
            env, "keys", "create", "--account", account["id"], "--name", "bench", *scopes,
            keystile=keystile,
        )["key"]  # fmt: skip
        service_key = run.cli(
            env, "keys", "create", "--account", account["id"], "--name", "bench-service",
            "--permission", "verify:keys", keystile=keystile,
        )["key"]  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"{variant.name}: {shlex.join(exc.cmd[1:])}: {exc.stderr.strip()}"
        ) from None
    port = run.free_port()
    command = [str(keystile), "serve", "--workers", str(options.workers), "--port", str(port)]
    health = f"http://127.0.0.1:{port}/healthz"
    served = stack.enter_context(run.process(command, env, health, home / "serve.log", cwd=home))
    return Server(variant.name, port, key, bin_path, env, home, service_key, served.pid)


# -- measuring -------------------------------------------------------------------------------


def _measure(
    scenario: Scenario,
    targets: dict[str, Target],
    options: argparse.Namespace,
    logs: dict[str, Path],
    pids: dict[str, int],
) -> dict[str, Any]:
    """Warm up every target, then ``options.rounds`` interleaved rounds.
    A target served by one of ``pids`` (by name) also gets its server's CPU
    per request (µs): the supervisor's and workers' CPU over the requests."""
    for name, target in targets.items():
        warm = run.wrk(target.url, options.connections, 2, target.script, target.header)
        if warm["requests"] == 0 or warm["non_2xx"] or warm["errors"]:
            where = f" (server log: {logs[name]})" if name in logs else ""
            raise SystemExit(
                f"{scenario.name}/{name}: the warm-up got {warm['non_2xx']} non-2xx answers and "
                f"{warm['errors']} socket errors in {warm['requests']} requests{where}"
            )
    rounds = []
    watch = CpuWatch()
    for number in range(1, options.rounds + 1):
        load = round(os.getloadavg()[0], 2)
        watch.others_cores()
        runs = {}
        order = list(targets)
        if options.order == "rotate":  # no variant always runs first (or last) in a round
            shift = (number - 1) % len(order)
            order = order[shift:] + order[:shift]
        for name in order:
            target = targets[name]
            pid = pids.get(name)
            cpu = tree_cpu_seconds(pid) if pid else 0.0
            runs[name] = run.wrk(
                target.url, options.connections, options.seconds, target.script, target.header
            )
            if pid and runs[name]["requests"]:
                used = tree_cpu_seconds(pid) - cpu
                runs[name]["cpu_us"] = round(used / runs[name]["requests"] * 1e6, 1)
        others = watch.others_cores()
        runs = {name: runs[name] for name in targets}
        rounds.append(
            {"round": number, "order": order, "load_1m": load, "others_cores": others, "runs": runs}
        )
        line = "  ".join(f"{name} {runs[name]['rps']:,.0f}" for name in order)
        print(f"{scenario.name} round {number}: {line} rps (load {load}, others {others} cores)")
    return {"description": scenario.description, "rounds": rounds, "summary": _summary(rounds)}


def _summary(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row: medians over the rounds, the rps spread, and the ratio to the
    first row (of the medians; and the range of the round-by-round ratios)."""
    names = list(rounds[0]["runs"])
    first = names[0]
    summary = {}
    for name in names:
        runs = [r["runs"][name] for r in rounds]
        rps = [run_["rps"] for run_ in runs]
        paired = [r["runs"][name]["rps"] / r["runs"][first]["rps"] for r in rounds]
        summary[name] = {
            "rps": round(statistics.median(rps), 1),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p50_ms": round(statistics.median(run_["p50_ms"] for run_ in runs), 3),
            "p99_ms": round(statistics.median(run_["p99_ms"] for run_ in runs), 3),
            "ratio": 0.0,
            "ratio_min": round(min(paired), 3),
            "ratio_max": round(max(paired), 3),
            "cpu_us": round(statistics.median(run_.get("cpu_us", 0.0) for run_ in runs), 1),
            "non_2xx": sum(run_["non_2xx"] for run_ in runs),
            "errors": sum(run_["errors"] for run_ in runs),
        }
    for name in names:
        summary[name]["ratio"] = round(summary[name]["rps"] / summary[first]["rps"], 3)
    return summary


def run_comparison(variants: list[Variant], options: argparse.Namespace) -> dict[str, Any]:
    """Measure ``options.scenario`` for every variant; the results as saved.

    ``options`` carries ``scenario`` (names in ``SCENARIOS``), ``rounds``,
    ``seconds``, ``connections``, ``workers``, ``database`` ("sqlite" or
    "postgres"), ``name`` and ``argv`` (recorded), as ``parse_options`` makes
    them. Exits (SystemExit) when a server does not start or a warm-up gets
    anything but 2xx answers.
    """
    run.ensure_wrk()
    bins = {ref: bin_dir(ref) for ref in dict.fromkeys(v.ref for v in variants)}
    load_before = round(os.getloadavg()[0], 2)
    results: dict[str, Any] = {
        "name": options.name,
        "date": dt.date.today().isoformat(),
        "command": options.argv,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_generator": "wrk -t1 (one thread), on the same cores",
        },
        "settings": {
            key: getattr(options, key)
            for key in ("rounds", "seconds", "connections", "workers", "database", "order")
        },
        "variants": [
            {"name": v.name, "ref": v.ref, "commit": describe(v.ref), "env": dict(v.env)}
            for v in variants
        ],
        "scenarios": {},
    }
    work = Path(tempfile.mkdtemp(prefix="keystile-compare-"))
    cleanups: list[Callable[[], None]] = []
    finished = False
    try:
        with contextlib.ExitStack() as stack:
            upstream_port = run.free_port()
            upstream = [str(run.VENV / "python"), "-m", "uvicorn", "bench.apps:bare",
                        "--port", str(upstream_port), "--workers", str(options.workers),
                        "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
                        "--no-access-log"]  # fmt: skip
            health = f"http://127.0.0.1:{upstream_port}/"
            stack.enter_context(run.process(upstream, run.base_env(), health, work / "up.log"))
            routes = work / "routes.toml"
            routes.write_text(routes_toml(upstream_port))
            bench = Bench(upstream_port, work, stack)
            servers = [
                _serve(v, bins[v.ref], stack, work, routes, options, cleanups) for v in variants
            ]
            logs = {s.variant: s.work / "serve.log" for s in servers}
            for name in options.scenario:
                scenario = SCENARIOS[name]
                if scenario.per_variant:
                    targets = {s.variant: scenario.target(bench, s) for s in servers}
                else:
                    targets = {REFERENCE: scenario.target(bench, None)}
                pids = {s.variant: s.pid for s in servers}
                results["scenarios"][name] = _measure(scenario, targets, options, logs, pids)
        finished = True
    finally:
        for cleanup in cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        if finished:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"the run stopped; its servers' logs are kept in {work}", file=sys.stderr)
    results["warnings"] = _warnings(results)
    return results


def _warnings(results: dict[str, Any]) -> list[str]:
    found = []
    before = results["machine"]["load_average_before"]
    if before > BUSY_LOAD:
        found.append(f"the machine was busy before the run: load average {before}")
    for name, measured in results["scenarios"].items():
        busy = [r for r in measured["rounds"] if r["others_cores"] > BUSY_OTHERS]
        if busy:
            taken = ", ".join(f"{r['others_cores']}" for r in busy)
            found.append(
                f"{name}: other processes took {taken} cores during {len(busy)} of "
                f"{len(measured['rounds'])} rounds"
            )
        for row, s in measured["summary"].items():
            if s["non_2xx"] or s["errors"]:
                found.append(f"{name}/{row}: {s['non_2xx']} non-2xx answers, {s['errors']} errors")
    return found


# -- reporting ---------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    """The comparison as a markdown section (a ``###`` heading per run, a
    ``####`` one per scenario), as it goes to stdout and into the docs."""
    settings = results["settings"]
    machine = results["machine"]
    first = results["variants"][0]["name"]
    variants = "; ".join(
        f"**{v['name']}** = `{v['ref']}`"
        + (f" (`{v['commit']}`)" if v["commit"] != v["ref"] else "")
        + (", " + ", ".join(f"`{k}={val}`" for k, val in v["env"].items()) if v["env"] else "")
        for v in results["variants"]
    )
    lines = [
        f"### {results['name']}",
        "",
        f"`{results['command']}` on {results['date']}; raw data in "
        f"`bench/results/{result_file(results).name}`.",
        "",
        f"Variants: {variants}. {settings['rounds']} interleaved round{'s' if settings['rounds'] > 1 else ''} "
        f"({'rotated' if settings.get('order') == 'rotate' else 'fixed'} order) of "
        f"{settings['seconds']} s per variant, {settings['connections']} connections, "
        f"{settings['workers']} keystile worker{'s' if settings['workers'] > 1 else ''}, "
        f"{settings['database']}; "
        f"{machine['load_generator']}, {machine['cpus']} cores, Python {machine['python']}; "
        f"load average before the run {machine['load_average_before']}.",
        "",
    ]
    for name, measured in results["scenarios"].items():
        rows = measured["summary"]
        lines += [
            f"#### {name}: {measured['description']}",
            "",
            f"| variant | rps (median) | rps min-max | p50 ms | p99 ms | ratio to {first} | round ratios "
            "| server CPU µs/request |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for number, (row, s) in enumerate(rows.items()):
            ratio, paired = (
                (f"{s['ratio']:.2f}", f"{s['ratio_min']:.2f}-{s['ratio_max']:.2f}")
                if number
                else ("1", "")
            )
            if row == REFERENCE:
                ratio = ""
            cpu = f"{s['cpu_us']:.1f}" if s.get("cpu_us") else ""
            lines.append(
                f"| {row} | {s['rps']:,.0f} | {s['rps_min']:,.0f}-{s['rps_max']:,.0f} | "
                f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {ratio} | {paired} | {cpu} |"
            )
        loads = ", ".join(str(r["load_1m"]) for r in measured["rounds"])
        others = ", ".join(str(r["others_cores"]) for r in measured["rounds"])
        lines += [
            "",
            f"Load average (1 min) before each round: {loads} (from the second round on it "
            f"includes this run's own server and wrk). Cores taken by other processes during "
            f"each round: {others}.",
            "",
        ]
    for warning in results["warnings"]:
        lines.append(f"**Warning:** {warning}.  ")
    if results["warnings"]:
        lines.append("")
    return "\n".join(lines)


def result_file(results: dict[str, Any]) -> Path:
    return run.RESULTS / f"compare-{results['date']}-{results['name']}.json"


def save(results: dict[str, Any]) -> Path:
    """Write the results to ``bench/results/compare-<date>-<name>.json``."""
    out = result_file(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return out


def write_section(name: str, text: str, path: Path = DOCS) -> None:
    """Put ``text`` in ``path`` between ``<!-- compare:NAME:start -->`` and
    ``<!-- compare:NAME:end -->``: replaces that section if it is there,
    else appends it at the end (under the ``COMPARING`` heading, which
    ``make bench`` keeps; added if missing). Other sections are left as they
    are; so is this one's place in the file."""
    start, end = f"<!-- compare:{name}:start -->", f"<!-- compare:{name}:end -->"
    block = f"{start}\n{text.strip()}\n{end}"
    current = path.read_text() if path.exists() else ""
    if COMPARING not in current:  # what make bench keeps starts there
        current = current.rstrip("\n") + f"\n\n{COMPARING}\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), flags=re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(updated)


def parse_options(argv: list[str]) -> tuple[list[Variant], argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=REF[:ENV=VALUE,...]",
                        help="a build and its extra environment; HEAD is the working tree; repeat (the first is the baseline)")  # fmt: skip
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="what to measure; repeat (default: verify)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration of each run (default 5)")  # fmt: skip
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="keystile workers (default 1)")
    parser.add_argument("--order", choices=["rotate", "fixed"], default="rotate",
                        help="rotate: each round starts one variant later (A B, B A, ...); fixed: A B, A B, ... (default rotate)")  # fmt: skip
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                        help="sqlite (embedded, default) or postgres (a throwaway database per variant)")  # fmt: skip
    parser.add_argument("--name", help="names the results file and the docs section (default: the variant names)")  # fmt: skip
    parser.add_argument("--docs", action="store_true", help="also write the section in docs/benchmarks.md")  # fmt: skip
    options = parser.parse_args(argv)
    try:
        variants = parse_variants(options.variant)
    except VariantError as exc:
        parser.error(str(exc))
    for number in ("rounds", "seconds", "connections", "workers"):
        if getattr(options, number) < 1:
            parser.error(f"--{number} must be at least 1")
    options.scenario = list(dict.fromkeys(options.scenario or ["verify"]))
    options.name = options.name or "-vs-".join(v.name for v in variants)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", options.name):
        parser.error("--name must be letters, digits, '_', '.' or '-'")
    options.argv = shlex.join(["python", "-m", "bench.compare", *argv])
    return variants, options


def main(argv: list[str] | None = None) -> None:
    variants, options = parse_options(sys.argv[1:] if argv is None else argv)
    try:
        results = run_comparison(variants, options)
    except VariantError as exc:
        raise SystemExit(str(exc)) from None
    out = save(results)
    text = markdown(results)
    print("\n" + text)
    if options.docs:
        write_section(results["name"], text)
    print(
        f"wrote {out.relative_to(run.ROOT)}" + (" and docs/benchmarks.md" if options.docs else "")
    )


if __name__ == "__main__":
    main()
