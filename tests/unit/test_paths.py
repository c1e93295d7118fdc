"""The one normalisation of request paths (issue #11, items 1 and 4): every
spelling an upstream could read as another path is refused, every other
path has one canonical form, and matching terminates for any input."""

from __future__ import annotations

import string
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keystile.gateway.routes import GatewayRoute, RouteTable, parse_routes
from keystile.http.paths import PathRefused, canonical_path
from keystile.settings import Settings

CATALOG = Settings().catalog

# Spellings of "go up one level" or "this level" that some common upstream
# resolves: raw, percent-encoded (either case, partly), double-encoded,
# overlong UTF-8, Unicode compatibility forms, servlet path parameters,
# trimmed by IIS/Windows.
DOT_SEGMENTS = [
    "..", ".", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e", "%252e%252e", "%c0%ae%c0%ae",
    "\uff0e\uff0e", "%ef%bc%8e%ef%bc%8e", "..;", "..;jsessionid=x", ";/..", "..%3b",
    "...", ". .", "..%20", "%20..", "..%09", "..%00", "..\\",
]  # fmt: skip
SEPARATORS = ["%2f", "%2F", "%5c", "%5C", "\\", "%252f", "%ef%bc%8f", ";", "%3b", "%3B", "//"]


def refused(path: str) -> bool:
    try:
        canonical_path(path)
    except PathRefused as exc:
        return exc.details[0].field == "path"
    return False


@pytest.mark.parametrize("segment", DOT_SEGMENTS)
@pytest.mark.parametrize("where", ["/v1/contacts/{}/webhooks", "/v1/contacts/{}", "/{}/v1"])
def test_every_spelling_of_a_dot_segment_is_refused(segment: str, where: str) -> None:
    assert refused(where.format(segment)), where.format(segment)


@pytest.mark.parametrize("separator", SEPARATORS)
def test_encoded_separators_and_path_parameters_are_refused(separator: str) -> None:
    assert refused(f"/v1/contacts{separator}webhooks")


@pytest.mark.parametrize(
    "path",
    [
        "*", "", "v1/contacts", "http://h/v1", "/v1/con tacts", "/v1/%zz", "/v1/%4", "/v1/%ff",
        "/v1/%00", "/v1/%0a", "/v1/a%e2%80%aeb", "/v1/\u00e9", "/v1/contacts.", "/v1/x%20",
    ],
)  # fmt: skip
def test_other_ambiguous_or_invalid_paths_are_refused(path: str) -> None:
    assert refused(path)


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/", "/"),
        ("/v1/contacts", "/v1/contacts"),
        ("/v1/contacts/", "/v1/contacts/"),
        ("/V1/Contacts/42", "/v1/contacts/42"),
        ("/v1/%63ontacts", "/v1/contacts"),
        ("/v1/%43ONTACTS", "/v1/contacts"),
        ("/v1/\uff43ontacts".encode().decode("latin-1"), None),  # raw non-ASCII: refused
        ("/v1/%ef%bd%83ontacts", "/v1/contacts"),  # fullwidth 'c', NFKC-folded
        ("/.well-known/x", "/.well-known/x"),
        ("/v1/files/report.v2.csv", "/v1/files/report.v2.csv"),
        ("/v1/John%20Doe", "/v1/john doe"),
        ("/v1/stra%C3%9Fe", "/v1/strasse"),
    ],
)
def test_canonical_forms(path: str, canonical: str | None) -> None:
    if canonical is None:
        assert refused(path)
    else:
        assert canonical_path(path) == canonical


PATH_TEXT = st.text(alphabet=string.printable + "%;\\/.\uff0e\u00e9", max_size=80)


@settings(max_examples=500, deadline=None)
@given(path=PATH_TEXT)
def test_a_canonical_path_is_stable_and_never_holds_a_dot_segment(path: str) -> None:
    try:
        canonical = canonical_path(path)
    except PathRefused:
        return
    segments = canonical.strip("/").split("/")
    assert not any(segment in (".", "..") for segment in segments)
    assert "\\" not in canonical and ";" not in canonical and "%" not in canonical
    assert canonical == canonical_path(canonical.encode().decode("latin-1")) or refused(
        canonical.encode().decode("latin-1")
    )


TABLE = parse_routes(
    """
[[routes]]
prefix = "/v1/contacts"
methods = ["GET"]
scope = "read:contacts"
upstream = "http://127.0.0.1:9001"

[[routes]]
prefix = "/"
methods = ["OPTIONS"]
scope = "read:contacts"
upstream = "http://127.0.0.1:9001"
""",
    CATALOG,
)


def _matches_within_a_second(table: RouteTable, method: str, path: str) -> object:
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(table.match(method, path)), daemon=True)
    worker.start()
    worker.join(timeout=1)
    assert result, f"match({method!r}, {path!r}) did not return"
    return result[0]


@settings(max_examples=1000, deadline=None)
@given(method=st.sampled_from(["GET", "OPTIONS", "POST", "get", ""]), path=st.text(max_size=200))
def test_the_matcher_terminates_for_any_string(method: str, path: str) -> None:
    # The review's input: OPTIONS with the asterisk-form target "*" looped forever.
    result = _matches_within_a_second(TABLE, method, path)
    assert result is None or isinstance(result, GatewayRoute | list)


@pytest.mark.parametrize("path", ["*", "", "example.com:443", "http://h/x", "\x00"])
def test_non_paths_match_nothing(path: str) -> None:
    assert _matches_within_a_second(TABLE, "OPTIONS", path) is None
