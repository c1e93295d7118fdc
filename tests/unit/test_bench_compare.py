"""The comparison harness's inputs and its docs sections (bench/compare.py,
bench/variants.py); no timing is measured here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.compare import parse_options, write_section
from bench.report import COMPARING, write_report
from bench.run import ROOT
from bench.variants import Variant, VariantError, parse_variant, parse_variants


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("before=242b2b0", Variant("before", "242b2b0")),
        ("after=HEAD", Variant("after", "HEAD")),
        ("old=main~3", Variant("old", "main~3")),
        ("off=HEAD:KEYSTILE_X=0", Variant("off", "HEAD", (("KEYSTILE_X", "0"),))),
        (
            "on=origin/main:KEYSTILE_A=1,KEYSTILE_B=two words",
            Variant("on", "origin/main", (("KEYSTILE_A", "1"), ("KEYSTILE_B", "two words"))),
        ),
        # A value keeps its '=', ':' and commas not followed by NAME=.
        (
            "r=HEAD:KEYSTILE_REDIS_URL=redis://127.0.0.1:6379/0,KEYSTILE_T=100/10 seconds",
            Variant(
                "r",
                "HEAD",
                (
                    ("KEYSTILE_REDIS_URL", "redis://127.0.0.1:6379/0"),
                    ("KEYSTILE_T", "100/10 seconds"),
                ),
            ),
        ),
        ("q=HEAD:KEYSTILE_LIST=a,b,c", Variant("q", "HEAD", (("KEYSTILE_LIST", "a,b,c"),))),
        ("e=HEAD:KEYSTILE_EMPTY=", Variant("e", "HEAD", (("KEYSTILE_EMPTY", ""),))),
        ("x=HEAD:K=a=b", Variant("x", "HEAD", (("K", "a=b"),))),
    ],
)
def test_a_variant_spec_gives_its_name_ref_and_environment(spec: str, expected: Variant) -> None:
    assert parse_variant(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "before",  # no '='
        "=HEAD",  # no name
        "a b=HEAD",  # name with a space
        "-x=HEAD",  # name starting with '-'
        "after=",  # no ref
        "after=:KEYSTILE_X=1",  # no ref before the environment
        "after=HE AD",  # ref with a space
        "after=HEAD:",  # ':' and nothing after
        "after=HEAD:KEYSTILE_X",  # a pair without '='
        "after=HEAD:1X=1",  # not a variable name
        "after=HEAD:=1",
    ],
)
def test_an_unusable_variant_spec_is_refused(spec: str) -> None:
    with pytest.raises(VariantError):
        parse_variant(spec)


def test_variant_names_must_be_distinct() -> None:
    with pytest.raises(VariantError, match="distinct: a"):
        parse_variants(["a=HEAD", "b=HEAD", "a=main"])
    assert [v.name for v in parse_variants(["a=HEAD", "b=HEAD:K=1"])] == ["a", "b"]


def test_options_default_and_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    variants, options = parse_options(["--variant", "before=HEAD~1", "--variant", "after=HEAD"])
    assert [v.name for v in variants] == ["before", "after"]
    assert (options.rounds, options.seconds, options.connections, options.workers) == (5, 5, 64, 1)
    assert options.order == "rotate"
    assert (options.scenario, options.database, options.name) == (
        ["verify"],
        "sqlite",
        "before-vs-after",
    )
    for argv in (
        ["--variant", "a"],
        ["--variant", "a=HEAD", "--rounds", "0"],
        ["--variant", "a=HEAD", "--scenario", "nope"],
        ["--variant", "a=HEAD", "--name", "../x"],
    ):
        with pytest.raises(SystemExit) as exited:
            parse_options(argv)
        assert exited.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_a_docs_section_is_appended_then_replaced_in_place(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nintro\n")
    write_section("issue-13", "### issue-13\n\nfirst\n", docs)
    write_section("issue-14", "### issue-14\n\nother\n", docs)
    write_section("issue-13", "### issue-13\n\nsecond\n", docs)
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert "first" not in text
    assert text.count("<!-- compare:issue-13:start -->") == 1
    assert text.index("second") < text.index("other")  # kept its place
    assert text.endswith("### issue-14\n\nother\n<!-- compare:issue-14:end -->\n")


def test_make_bench_keeps_the_comparisons_part_of_the_docs(tmp_path: Path) -> None:
    results = json.loads((ROOT / "bench" / "results" / "2026-11-26.json").read_text())
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nstale figures\n")
    write_section("issue-13", "### issue-13\n\nbefore and after\n", docs)
    write_report(results, docs)
    text = docs.read_text()
    assert "stale figures" not in text
    assert "## Targets (1 worker, 64 connections; the p99 row at 16)" in text
    assert text.index("## Targets") < text.index(f"\n{COMPARING}\n")
    assert text.endswith("### issue-13\n\nbefore and after\n<!-- compare:issue-13:end -->\n")
    write_report(results, docs)  # a second make bench changes nothing
    assert docs.read_text() == text
