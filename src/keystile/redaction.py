"""Masking secret-shaped text wherever keystile repeats what a client sent.

Clients paste secrets where they do not belong: a key where a key id goes
(``GET /v1/api-keys/wbk_live_…``), into a JSON field name, an
``X-Request-ID``, a query parameter. Any text keystile echoes back in an
error, or writes to a log line, passes through :func:`redact` first.

What counts as secret-shaped, whatever the client did to it:

- a keystile token (``{prefix}_live_…`` or ``{prefix}_root_…``, whatever
  the deployment's prefix) or a webhook signing secret (``whsec_…``), in any
  letter case and with ``_`` or ``-`` between the parts;
- a piece of one: any run of 16 or more letters and digits that mixes upper
  and lower case (a token's random body does, with overwhelming
  probability, in every 16-character piece), and any run of 20 or more
  that mixes letters and digits in one case (a body someone upper- or
  lower-cased: its checksum would let the original be recovered), except
  the two shapes keystile's own ids take: a ULID (``key_01J…``) and hex
  (``req_…``, digests);
- the same after percent-decoding (``wbk%5Flive%5F…``), up to three rounds.

Over-masking is the safe error: a masked id in an error message costs a
little clarity, a logged secret is a leaked key.

:func:`redact_log_line` applies to whole log lines (tracebacks included),
where the mixed-case rule would also mask Python class names: there a piece
must also contain a digit. Client text that goes into a log (the access
line's path, a request id) is passed through :func:`redact` first.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "[redacted]"
MIN_PIECE = 16

_RANDOM_RUN = re.compile(rf"[0-9A-Za-z]{{{MIN_PIECE},}}")
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_HEX = re.compile(r"[0-9a-f]+|[0-9A-F]+")
LONG_PIECE = 20
# Any prefix a deployment may configure (KEYSTILE_KEY_PREFIX: 2-16 letters
# or digits, starting with a letter), then the token's type and its body.
_TOKEN = re.compile(
    r"[a-z][a-z0-9]{1,15}[_-](?:live|root)[_-][0-9a-z]*|whsec[_-][0-9a-z]*", re.IGNORECASE
)


def _case_folded_body(text: str) -> bool:
    """A long run of letters and digits in one case that is not an id."""
    return (
        len(text) >= LONG_PIECE
        and any(c.isdigit() for c in text)
        and any(c.isalpha() for c in text)
        and not _ULID.fullmatch(text)
        and not _HEX.fullmatch(text)
    )


def _mixed_case(run: re.Match[str]) -> str:
    text = run.group(0)
    if (text.lower() != text and text.upper() != text) or _case_folded_body(text):
        return MASK
    return text


def _mixed_case_with_digit(run: re.Match[str]) -> str:
    text = run.group(0)
    mixed = text.lower() != text and text.upper() != text and any(c.isdigit() for c in text)
    if mixed or _case_folded_body(text):
        return MASK
    return text


def _redact_once(text: str) -> str:
    return _RANDOM_RUN.sub(_mixed_case, _TOKEN.sub(MASK, text))


def redact_log_line(line: str) -> str:
    """A rendered log line with tokens, and random-looking runs that mix
    upper and lower case and digits, masked."""
    return _RANDOM_RUN.sub(_mixed_case_with_digit, _TOKEN.sub(MASK, line))


def redact(text: str) -> str:
    """``text`` with every secret-shaped part replaced by ``[redacted]``.

    Returns ``text`` itself (the same object) when nothing needed masking.
    """
    redacted = _redact_once(text)
    decoded = redacted
    for _ in range(3):
        if "%" not in decoded:
            break
        once = unquote(decoded, errors="replace")
        if once == decoded:
            break
        decoded = once
        if _redact_once(decoded) != decoded:
            # Something secret-shaped hides behind percent-encoding: show
            # the decoded text, masked, rather than the encoded original.
            return _redact_once(decoded)
    return text if redacted == text else redacted


def looks_secret(text: str) -> bool:
    """True when :func:`redact` would mask anything in ``text``."""
    return redact(text) is not text


def holds_token(text: str) -> bool:
    """True when ``text`` holds a whole keystile token or signing secret
    (``…_live_…``, ``…_root_…``, ``whsec_…``), in any case or separator: what
    no name, description or metadata value should ever carry."""
    return _TOKEN.search(text) is not None or _TOKEN.search(unquote(text)) is not None
