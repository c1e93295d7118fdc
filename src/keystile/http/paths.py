"""What a request path *is*: the one normalisation every router uses.

keystile decides which gateway route, and so which scope, a request falls
under by its path; the upstream decides which resource to serve by its own
reading of the same bytes. Where the two readings can differ, a key scoped
to one route reaches another: ``/v1/contacts/..;/webhooks`` is
``/v1/webhooks`` to a servlet container, ``/v1/contacts/%2e%2e/webhooks`` to
anything that decodes before resolving dot segments, ``/V1/WEBHOOKS`` to a
case-insensitive router (Express's default), ``/v1/contacts/．．/webhooks``
to one that applies Unicode compatibility folding.

So :func:`canonical_path` accepts a path only when every common reading of
it names the same resource, and returns the form routes are matched in. It
refuses (:class:`~keystile.errors.ValidationFailed`, field ``path``):

- anything but an origin-form path (RFC 9112 §3.2.1: it starts with ``/``);
- characters outside RFC 3986's ``pchar`` (a backslash, a space, a quote,
  a control character, any non-ASCII byte) and ``;`` (path parameters:
  servlet containers strip ``;…`` from every segment);
- a ``%`` not followed by two hex digits, a percent-encoding that is not
  UTF-8 (overlong forms such as ``%c0%ae`` included), and any encoded
  ``/``, ``\\``, ``;``, ``%`` (double encoding) or control character;
- empty segments (``//``: many servers merge them), except one trailing
  ``/``;
- dot segments in any spelling: ``.`` and ``..`` raw, percent-encoded or
  in Unicode compatibility forms, and what some servers trim to one
  (segments of only dots and spaces, a trailing ``.``, surrounding
  whitespace: IIS and Windows file systems drop them).

The canonical form is the path percent-decoded, NFKC-normalised and case
folded, segment by segment. Gateway routes match in it, so a route covers
every spelling an upstream could take for the same resource. The path
forwarded to the upstream is still the original, byte for byte (contract §7).
"""

from __future__ import annotations

import re
import unicodedata

from keystile.errors import FieldProblem, ValidationFailed

# An ordinary path: unreserved and sub-delimiter characters without ';', no
# '%', no empty segment. Such a path only needs case folding (and a check
# for dot segments), which keeps the common case cheap.
_PLAIN = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,=:@]+)*/?")
_SEGMENT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,=:@]|%[0-9A-Fa-f]{2})*")
_FORBIDDEN_DECODED = frozenset("/\\;%")


class PathRefused(ValidationFailed):
    """A path that could mean another path to some upstream (→ 400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "The request path is ambiguous: an upstream could read it as another path.",
            [FieldProblem("path", reason)],
        )


def _decoded_segment(segment: str) -> str:
    if not _SEGMENT.fullmatch(segment):
        raise PathRefused(
            "only RFC 3986 path characters are allowed (no ';', '\\', spaces or "
            "controls), and '%' must start a two-digit hex escape"
        )
    if "%" not in segment:
        text = segment
    else:
        raw = bytearray()
        index = 0
        while index < len(segment):
            if segment[index] == "%":
                raw.append(int(segment[index + 1 : index + 3], 16))
                index += 3
            else:
                raw.append(ord(segment[index]))
                index += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PathRefused("percent-encoded bytes must be UTF-8") from None
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    for char in folded:
        if char in _FORBIDDEN_DECODED:
            raise PathRefused("no encoded '/', '\\', ';' or '%' (double encoding)")
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            raise PathRefused("no control or formatting characters")
    if not folded:
        raise PathRefused("no empty segments")
    if folded != folded.strip():
        raise PathRefused("no whitespace at the start or end of a segment")
    if not folded.replace(".", "").strip():
        raise PathRefused("no '.' or '..' segments, in any spelling")
    if folded.endswith("."):
        raise PathRefused("no '.' at the end of a segment (some servers drop it)")
    return folded


def canonical_path(path: str) -> str:
    """The canonical form of a raw request path (no query string): decoded,
    NFKC-normalised and case-folded segment by segment, ``/``-joined.

    ``path`` is the request target's path exactly as received (ASGI's
    ``raw_path``, decoded as Latin-1). Raises :class:`PathRefused` for a
    path that some common upstream could read as a different path (see the
    module docstring). Runs in time linear in ``len(path)`` for any input.
    """
    if not path.startswith("/"):
        raise PathRefused("must start with '/' (origin-form, RFC 9112 §3.2.1)")
    if _PLAIN.fullmatch(path) and "/." not in path and "./" not in path and not path.endswith("."):
        return path.lower()
    segments = path[1:].split("/")
    canonical: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if not segment:
            if index == last:
                canonical.append("")
                continue
            raise PathRefused("no empty segments ('//')")
        canonical.append(_decoded_segment(segment))
    return "/" + "/".join(canonical)


def raw_path_of(scope_path: str, raw_path: bytes | None) -> str:
    """The path as the client sent it: ASGI ``raw_path`` without its query
    string (some servers include it), else the decoded ``path``."""
    if not raw_path:
        return scope_path
    return raw_path.partition(b"?")[0].decode("latin-1")
