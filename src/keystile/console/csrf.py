"""CSRF protection of the console's forms (contract §16).

Three layers, any one of which stops a cross-site form post: the session
cookie is ``SameSite=Strict`` (a browser does not send it on a request another
site starts); a request the browser labels ``Sec-Fetch-Site: cross-site`` is
refused; every form carries a token the attacker cannot read.

Signed-in forms carry the session's own token (stored with the session).
The sign-in form, which has no session yet, carries an HMAC of a random
pre-session cookie under a key derived from the application key: a cookie
planted by a sibling domain does not come with a valid token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.datastructures import Headers

from keystile.idempotency.crypto import Keyring

PRE_SESSION_COOKIE = "keystile_console_signin"


def new_pre_session() -> str:
    return secrets.token_urlsafe(32)


def sign_in_token(keyring: Keyring, pre_session: str) -> str:
    key = hashlib.sha256(b"keystile-console-csrf" + keyring.keys[0]).digest()
    return hmac.new(key, pre_session.encode(), hashlib.sha256).hexdigest()


def same_token(expected: str, given: str | None) -> bool:
    # Constant time: the comparison must not tell an attacker how much of a
    # guessed token was right.
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def cross_site(headers: Headers) -> bool:
    """What the browser says about who started the request (Fetch Metadata)."""
    return headers.get("sec-fetch-site", "") == "cross-site"
