"""The targets table and the front-end section of docs/benchmarks.md
(bench/report.py), from made-up runs: nothing is measured here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import front_ends
from bench.report import write_report
from bench.run import ROOT


def _run(config: str, rps: float, p99_ms: float = 2.0, connections: int = 64) -> dict[str, Any]:
    return {"config": config, "workers": 1, "connections": connections, "rps": rps,
            "p50_ms": 1.0, "p99_ms": p99_ms, "requests": 1, "non_2xx": 0, "errors": 0}  # fmt: skip


def _report(tmp_path: Path, runs: list[dict[str, Any]]) -> str:
    results = json.loads((ROOT / "bench" / "results" / "2026-11-30.json").read_text())
    results["runs"] = runs
    docs = tmp_path / "benchmarks.md"
    write_report(results, docs)
    return docs.read_text()


def _row(text: str, starts: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {starts}"))


def test_each_issue_19_target_is_judged_against_its_own_reference(tmp_path: Path) -> None:
    text = _report(
        tmp_path,
        [
            _run("a. bare ASGI", 40_000.0),
            _run("a. bare ASGI", 30_000.0, p99_ms=1.5, connections=16),
            _run("b. verify, memory limiter", 20_000.0),  # 0.5: met
            _run("b. verify, memory limiter", 9_000.0, p99_ms=3.1, connections=16),  # ≤ 2×
            _run("b. proxy, memory limiter", 10_000.0),
            _run("f. bare upstream, direct", 30_000.0),  # 0.33: not met
            _run("e. creates, SQLite", 999.0),  # not met
            _run("e. creates, PostgreSQL", 800.0),  # met
        ],
    )
    assert _row(text, "(b) verify hot path").endswith("| 0.50 | met |")
    p99 = _row(text, "(b) verify p99 at 16 connections")
    assert "3.10 ms and 1.50 ms" in p99
    assert p99.endswith("| 2.07 | **not met** |")
    assert _row(text, "proxy hot path").endswith("| 0.33 | **not met** |")
    assert _row(text, "(e) creates per second, SQLite").endswith("| 999 | **not met** |")
    assert _row(text, "(e) creates per second, PostgreSQL").endswith("| 800 | met |")


def test_the_front_end_section_sets_each_keystile_beside_its_own_bare_app(tmp_path: Path) -> None:
    runs = [
        _run("a. bare ASGI", 40_000.0),
        _run(front_ends.BARE_ASGI, 50_000.0),
        _run(front_ends.BARE_RSGI, 60_000.0),
        _run("b. verify, memory limiter", 8_000.0),
        _run(front_ends.VERIFY, 10_000.0),
    ]
    assert "### The front end" not in _report(tmp_path, runs[:1] + runs[3:4])
    text = _report(tmp_path, runs)
    assert _row(text, "64, verify") == (
        "| 64, verify | 40,000, 50,000 | 60,000 | 8,000, 10,000 | 0.20, 0.20 | 0.25 |"
    )
