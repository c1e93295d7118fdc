"""Sending one signed webhook request (contract §13).

One attempt is a ``POST`` of the event's stored body with
``Content-Type: application/json``, ``Keystile-Event-Id`` and
``Keystile-Signature``, bounded by 10 seconds from the name lookup to the
last byte read. Only a 2xx succeeds; a 3xx is a failure (redirects are not
followed: a redirect could point anywhere, including inside the network).

The host name is resolved, every address checked (``webhooks.urls``), and
the request sent to the checked address itself, with the name in ``Host``
and in TLS's SNI (so the certificate is verified for the name): a resolver
that answers differently a moment later cannot redirect the request
(DNS rebinding). Connections are not kept alive, so a connection made for
one name is never reused for another name on the same address. The
receiver's answer is read up to 64 KiB and discarded.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from keystile import __version__
from keystile.webhooks.models import Outcome
from keystile.webhooks.signature import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header
from keystile.webhooks.urls import (
    IPAddress,
    Target,
    UrlPolicy,
    UrlRefused,
    allowed_addresses,
    check_url,
    literal_address,
)

TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 65_536
USER_AGENT = f"keystile-webhooks/{__version__}"


def _address_url(target: Target, address: IPAddress) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{target.scheme}://{host}:{target.port}{target.path}"


class Sender:
    """Sends attempts over one httpx client; :meth:`close` at shutdown."""

    def __init__(
        self,
        policy: UrlPolicy,
        *,
        timeout_seconds: float = TIMEOUT_SECONDS,
        max_connections: int = 8,
    ) -> None:
        self._policy = policy
        self._timeout = timeout_seconds
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the address check must hold
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=0),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, url: str, event_id: str, body: bytes, secret: str) -> Outcome:
        """One attempt; never raises for anything the receiver or the
        network does (the :class:`Outcome` says what happened)."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._send(url, event_id, body, secret)
        except TimeoutError:
            return Outcome(None, f"timed out after {self._timeout:g} s")
        except UrlRefused as exc:
            return Outcome(None, f"refused: the URL {exc}")
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {str(exc)[:200] or 'failed'}")

    async def _send(self, url: str, event_id: str, body: bytes, secret: str) -> Outcome:
        target = check_url(url, self._policy)
        addresses = await allowed_addresses(target, self._policy)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Host": target.host_header,
            EVENT_ID_HEADER: event_id,
            SIGNATURE_HEADER: signature_header(body, secret, int(time.time())),
        }
        extensions = {}
        if target.scheme == "https" and literal_address(target.host) is None:
            extensions["sni_hostname"] = target.host
        last_error: httpx.ConnectError | None = None
        for address in addresses:
            request = self._client.build_request(
                "POST",
                _address_url(target, address),
                content=body,
                headers=headers,
                extensions=extensions,
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.ConnectError as exc:
                last_error = exc  # try the name's next address
                continue
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_ANSWER_BYTES:
                        break
            finally:
                await response.aclose()
            return _outcome(response.status_code)
        assert last_error is not None  # allowed_addresses returns at least one
        raise last_error


def _outcome(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome(status)
    if 300 <= status < 400:
        return Outcome(status, f"HTTP {status}: redirects are not followed")
    return Outcome(status, f"HTTP {status}")
