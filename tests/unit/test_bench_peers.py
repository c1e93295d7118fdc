"""The peers' part of the benchmark (bench/peers.py, section (i) of
docs/benchmarks.md); no peer is installed or served and no timing is measured."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bench.peers import PEERS, stamp
from bench.report import peer_ratios, write_report
from bench.run import ROOT

DRF = PEERS["drf-api-key"]


def _run(config: str, rps: float, connections: int = 64, workers: int = 1) -> dict[str, Any]:
    return {"config": config, "workers": workers, "connections": connections, "rps": rps,
            "p50_ms": 1.0, "p99_ms": 2.0, "requests": 1, "non_2xx": 0, "errors": 0}  # fmt: skip


def test_the_ratios_are_keystile_over_the_peer_at_one_worker_and_the_connections_given() -> None:
    runs = [
        _run(DRF.config, 500.0),
        _run(DRF.config, 9_999.0, connections=16),
        _run("b. proxy, memory limiter", 6_000.0),
        _run("b. proxy, memory limiter", 1.0, workers=2),
        _run("b. verify, memory limiter", 7_000.0),
    ]
    assert peer_ratios(runs, DRF.config, 64) == {"gateway": 12.0, "verify": 14.0}


def test_a_peer_not_measured_has_no_ratios() -> None:
    assert peer_ratios([_run("b. proxy, memory limiter", 6_000.0)], DRF.config, 64) is None


def test_a_peer_venv_is_rebuilt_when_its_pins_change() -> None:
    bumped = dataclasses.replace(DRF, requirements=(*DRF.requirements[:-1], "gunicorn==99.0"))
    assert stamp(DRF) == stamp(DRF)
    assert stamp(bumped) != stamp(DRF)


def test_the_report_has_a_peers_section_only_with_the_peers_measured(tmp_path: Path) -> None:
    results = json.loads((ROOT / "bench" / "results" / "2026-11-30.json").read_text())
    peer_configs = {peer.config for peer in PEERS.values()}
    results["runs"] = [r for r in results["runs"] if r["config"] not in peer_configs]
    docs = tmp_path / "benchmarks.md"
    write_report(results, docs)  # a run without the peers
    assert "| FastAPI + dict key check, uvicorn | 64 |" not in docs.read_text()
    verify = next(r for r in results["runs"] if r["config"] == "b. verify, memory limiter"
                  and r["workers"] == 1 and r["connections"] == 64)  # fmt: skip
    peer = PEERS["fastapi-dict"]
    results["runs"].append(_run(peer.config, verify["rps"] / 2))
    write_report(results, docs)
    text = docs.read_text()
    assert "## (i) Against the peers" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {peer.title} | 64 |"))
    assert row.split(" | ")[4] == "2.00"  # verify / peer
