"""The (d) target of ``make bench``: the cold path's ratio to the build
before issue 19, measured in the same run (bench/baseline.py,
bench/report.py); no timing is measured here."""

from __future__ import annotations

from typing import Any

from bench.baseline import BEFORE_ISSUE_19, COLD_PROXY, COLD_VERIFY, before, cold_ratios
from bench.report import _targets


def run(config: str, rps: float, workers: int = 1, connections: int = 64) -> dict[str, Any]:
    return {"config": config, "workers": workers, "connections": connections, "rps": rps,
            "p50_ms": 1.0, "p99_ms": 2.0, "requests": 1, "non_2xx": 0, "errors": 0}  # fmt: skip


MEASURED = [
    run(COLD_PROXY, 2400.0),
    run(COLD_VERIFY, 1500.0),
    run(before(COLD_PROXY), 800.0),
    run(before(COLD_VERIFY), 600.0),
    run(before(COLD_PROXY), 1.0, workers=2),  # other worker counts do not count
    run(before(COLD_VERIFY), 1.0, connections=16),
]


def test_the_ratios_are_taken_at_one_worker_and_64_connections() -> None:
    assert cold_ratios(MEASURED) == {"proxy": 3.0, "verify": 2.5}


def test_a_run_without_the_build_before_has_no_ratio() -> None:
    assert cold_ratios(MEASURED[:2]) is None
    assert cold_ratios([r for r in MEASURED if r["config"] != before(COLD_VERIFY)]) is None


def targets(runs: list[dict[str, Any]]) -> list[str]:
    """The targets table of a run that measured ``runs`` (and the references)."""
    references = [run("a. bare ASGI", 1.0), run("f. bare upstream, direct", 1.0)]
    return _targets({"runs": [*runs, *references], "memory": {}})


def test_the_targets_table_needs_both_ratios_at_3() -> None:
    row = f"| (d) PostgreSQL cold path, ratio to the build before issue 19 ({BEFORE_ISSUE_19}): "
    assert f"{row}proxy 3.00, verify 2.50; the smaller | ≥ 3 | 2.50 | **not met** |" in targets(
        MEASURED
    )
    faster = [run(COLD_VERIFY, 1800.0), *MEASURED[2:], run(COLD_PROXY, 2400.0)]
    assert f"{row}proxy 3.00, verify 3.00; the smaller | ≥ 3 | 3.00 | met |" in targets(faster)
    assert not any("(d) PostgreSQL cold path" in line for line in targets(MEASURED[:2]))
