"""The HTTP front end's limits (issue #11, item 12) against a real
``keystile serve``, over raw sockets: slow heads, oversized heads, idle
connections, the connection cap, and the envelope on the front end's own
answers.

No timing is asserted beyond "the server ended it before the client gave
up": every wait is bounded by :data:`BOUND`, far above the configured
timeouts, so a busy machine is slower, never red."""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import pytest

from tests.support import GRANIAN_GAP, ON_GRANIAN, ServerURL, cli_admin, keystile_env, serving

skip_on_granian = pytest.mark.skipif(ON_GRANIAN, reason=GRANIAN_GAP)
BOUND = 30.0  # seconds: "does not hang", never a performance claim
IDLE_SOCKETS = 1100


@pytest.fixture(scope="module", autouse=True)
def enough_files() -> None:
    """This test process opens over a thousand sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * IDLE_SOCKETS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerURL, str]]:
    """Short timeouts, default head limits."""
    directory = tmp_path_factory.mktemp("front-end")
    env = keystile_env(
        directory / "data",
        KEYSTILE_HTTP_HEADER_TIMEOUT_SECONDS="2",
        KEYSTILE_HTTP_KEEPALIVE_TIMEOUT_SECONDS="1",
        KEYSTILE_AUTH_FAILURE_LIMIT="100000/minute",
    )
    _, admin = cli_admin(env)
    with serving(env, log=directory / "server.log") as url:
        yield url, admin
    log = (directory / "server.log").read_text()
    assert "Traceback" not in log


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=BOUND)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a TimeoutError (the
    server kept the connection open) fails the test."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} twice"
        headers[name.lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def assert_envelope(data: bytes, status: int, code: str) -> dict[str, object]:
    """The front end's own answer: the §3 envelope, keystile's headers, and
    the connection closed after it."""
    got, headers, body = parse(data)
    assert got == status, data[:300]
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == headers["x-request-id"]
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body))
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["connection"] == "close"
    return dict(error)


def get_healthz(url: str) -> int:
    with connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return parse(read_until_closed(sock))[0]


class Trickle:
    """Sends ``data`` a piece at a time, pausing after each, while a thread
    reads the answer."""

    def __init__(self, url: str, data: bytes, piece: int, pause: float) -> None:
        self.sock = connect(url)
        self.data, self.piece, self.pause = data, piece, pause
        self.answer = b""
        self.reader = threading.Thread(target=self._read)

    def _read(self) -> None:
        self.answer = read_until_closed(self.sock)

    def run(self, meanwhile: Callable[[], None] | None = None) -> bool:
        """Whether the server closed the connection before the client was
        done (the last pause included); ``meanwhile`` runs after 2 pieces."""
        self.reader.start()
        cut = False
        with self.sock:
            for number, start in enumerate(range(0, len(self.data), self.piece)):
                try:
                    self.sock.sendall(self.data[start : start + self.piece])
                except OSError:
                    cut = True  # the server is gone
                    break
                if number == 1 and meanwhile is not None:
                    meanwhile()
                time.sleep(self.pause)
                if not self.reader.is_alive():
                    cut = True
                    break
            self.reader.join(BOUND)
            assert not self.reader.is_alive(), "the server kept the connection open"
        return cut


HEAD = b"GET /healthz HTTP/1.1\r\nHost: keystile.test\r\nUser-Agent: slow\r\n"
SLOW_HEADS = {
    "byte by byte": (HEAD + b"X-Pad: " + b"a" * 300 + b"\r\n\r\n", 1, 0.05),
    "a header line at a time": (HEAD + b"".join(b"X-H%d: v\r\n" % i for i in range(60)), 9, 0.5),
    "a header value that never ends": (HEAD + b"X-Slow: " + b"b" * 1000, 1, 0.05),
    "all but the blank line, then nothing": (HEAD, len(HEAD), BOUND / 3),
}


@skip_on_granian
@pytest.mark.parametrize("kind", SLOW_HEADS)
def test_a_slow_head_is_cut_after_the_header_timeout(
    quick: tuple[ServerURL, str], kind: str
) -> None:
    url, _ = quick
    data, piece, pause = SLOW_HEADS[kind]
    healthz: list[int] = []
    trickle = Trickle(url, data, piece, pause)
    cut = trickle.run(meanwhile=lambda: healthz.append(get_healthz(url)))
    assert cut, "the server waited for the whole head"
    error = assert_envelope(trickle.answer, 400, "validation_error")
    assert error["details"] == [{"field": "headers", "message": "arrived too slowly"}]
    if len(data) > 2 * piece:
        assert healthz == [200]  # the worker serves others meanwhile


def fields(count: int, size: int = 1) -> bytes:
    return b"".join(b"X-H%d: %s\r\n" % (i, b"v" * size) for i in range(count))


GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # Host is the first header field
HEADS = {
    "an 8 MiB header in one send": (GET + b"X-Big: " + b"a" * (8 << 20) + b"\r\n\r\n", 1 << 20),
    "a 40 KiB header sent 1 KiB at a time": (GET + b"X-Big: " + b"a" * 40_960 + b"\r\n\r\n", 1024),
    "20,000 small header fields": (GET + fields(20_000) + b"\r\n", 1 << 20),
    "101 header fields": (GET + fields(100) + b"\r\n", 1 << 20),
    "101 header fields sent one at a time": (GET + fields(100) + b"\r\n", 9),
    "a 64 KiB request target": (b"GET /" + b"a" * 65_536 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 1024),
    "33 KiB of header fields, keep-alive": (GET + fields(33, 1000) + b"\r\n", 1 << 20),
}
WITHIN = {
    "100 header fields": GET + fields(99) + b"\r\n",
    "a 30 KiB header": GET + b"X-Big: " + b"a" * 30_720 + b"\r\n\r\n",
    "31 KiB of header fields sent 1 KiB at a time": GET + fields(31, 1000) + b"\r\n",
}


@skip_on_granian
@pytest.mark.parametrize("kind", HEADS)
def test_a_head_over_the_limits_gets_a_431_and_the_connection_closes(
    quick: tuple[ServerURL, str], kind: str
) -> None:
    url, _ = quick
    data, piece = HEADS[kind]
    trickle = Trickle(url, data, piece, 0.001 if piece < len(data) else 0)
    trickle.run()
    assert_envelope(trickle.answer, 431, "request_header_fields_too_large")


@pytest.mark.parametrize("kind", WITHIN)
def test_a_head_within_the_limits_is_served(quick: tuple[ServerURL, str], kind: str) -> None:
    url, _ = quick
    with connect(url) as sock:
        data = WITHIN[kind]
        for start in range(0, len(data), 1024):
            sock.sendall(data[start : start + 1024])
        status, headers, _ = parse(read_until_closed(sock))
    assert status == 200
    assert headers["x-request-id"].startswith("req_")


IDLE_KINDS = {
    "silent": b"",
    "a partial head": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    "empty lines": b"\r\n\r\n\r\n",
}
OPEN_FILE_LIMITS = {
    "the default limits": None,
    "a soft open-file limit of 1024": (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
    "a hard open-file limit of 1024": (1024, 1024),
}


@skip_on_granian
@pytest.mark.parametrize(
    ("files", "kind"),
    [(files, "silent") for files in OPEN_FILE_LIMITS]
    + [("the default limits", kind) for kind in IDLE_KINDS if kind != "silent"],
)
def test_idle_connections_cannot_lock_out_healthz(tmp_path: Path, files: str, kind: str) -> None:
    """1,100 idle connections, more than the default cap (1,000) and than a
    common open-file limit (1,024), with timeouts too long to help."""
    env = keystile_env(
        tmp_path / "data",
        KEYSTILE_HTTP_HEADER_TIMEOUT_SECONDS="300",
        KEYSTILE_HTTP_KEEPALIVE_TIMEOUT_SECONDS="300",
    )
    log = tmp_path / "server.log"
    with serving(env, log=log, open_files=OPEN_FILE_LIMITS[files]) as url, ExitStack() as stack:
        idle = []
        for _ in range(IDLE_SOCKETS):
            sock = stack.enter_context(connect(url))
            sock.sendall(IDLE_KINDS[kind])
            idle.append(sock)
        assert [get_healthz(url) for _ in range(3)] == [200, 200, 200]
        # The server made room by closing the idle connections that were
        # nearest their own timeout: the oldest.
        idle[0].settimeout(BOUND)
        assert read_until_closed(idle[0]) == b""
    if files == "a hard open-file limit of 1024":
        assert "allows 384 connections per worker" in log.read_text()


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[tuple[ServerURL, str]]:
    """At most four connections, and slow bodies keep their requests in progress."""
    env = keystile_env(
        tmp_path / "data",
        KEYSTILE_HTTP_MAX_CONNECTIONS="4",
        KEYSTILE_HTTP_KEEPALIVE_TIMEOUT_SECONDS="300",
        KEYSTILE_BODY_TIMEOUT_SECONDS="300",
    )
    _, admin = cli_admin(env)
    with serving(env, log=tmp_path / "server.log") as url:
        yield url, admin


def busy(url: str, admin: str) -> socket.socket:
    """A connection whose request is in progress: its body never completes."""
    sock = connect(url)
    sock.sendall(
        b"POST /v1/api-keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {admin}\r\n".encode()
        + b"Content-Length: 100\r\n\r\n{"
    )
    return sock


@skip_on_granian
@pytest.mark.parametrize("idle", [0, 1])
def test_at_the_cap_idle_connections_make_room_and_busy_ones_do_not(
    tiny: tuple[ServerURL, str], idle: int
) -> None:
    url, admin = tiny
    with ExitStack() as stack:
        for _ in range(4 - idle):
            stack.enter_context(busy(url, admin))
        waiting = [stack.enter_context(connect(url)) for _ in range(idle)]
        time.sleep(0.5)  # let the server see the requests start
        with connect(url) as sock:
            if idle:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert parse(read_until_closed(sock))[0] == 200
                assert read_until_closed(waiting[0]) == b""
            else:
                answer = read_until_closed(sock)  # refused before any request is read
                assert_envelope(answer, 503, "service_unavailable")
                assert parse(answer)[1]["retry-after"] == "1"
    # The requests in progress were never disturbed; once they end, room again.
    deadline = time.monotonic() + BOUND
    while True:
        with suppress(OSError, IndexError, ValueError):
            if get_healthz(url) == 200:
                break
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["after a response", "never a request", "only empty lines"])
def test_an_idle_connection_is_closed_after_the_keepalive_timeout(
    quick: tuple[ServerURL, str], kind: str
) -> None:
    url, _ = quick
    if kind == "only empty lines":
        # Empty lines before a request (RFC 9112 §2.2) do not make it busy.
        trickle = Trickle(url, b"\r\n" * 100, 2, 0.2)
        assert trickle.run(), "the server kept the connection open"
        assert trickle.answer == b""
        return
    with connect(url) as sock:
        if kind == "after a response":
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock)
    if kind == "after a response":
        status, headers, _ = parse(answer)
        assert status == 200 and "connection" not in headers  # kept alive, then closed
    else:
        assert answer == b""


MALFORMED = {
    "a bad method token": b"GE(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "an unknown HTTP version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "a space in a header name": GET + b"Bad Name: x\r\n\r\n",
    "a CR inside a header value": GET + b"X-Request-ID: a\rInjected: yes\r\n\r\n",
    "a TLS ClientHello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    "an invalid chunk size": (
        b"POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ),
}


@skip_on_granian
@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_http_gets_the_envelope_and_a_request_id(
    quick: tuple[ServerURL, str], kind: str
) -> None:
    url, _ = quick
    with connect(url) as sock:
        sock.sendall(MALFORMED[kind])
        answer = read_until_closed(sock)
    error = assert_envelope(answer, 400, "validation_error")
    assert str(error["request_id"]).startswith("req_")
    assert b"Injected" not in answer


@skip_on_granian
def test_a_framing_error_in_a_body_answers_with_the_requests_own_id(
    quick: tuple[ServerURL, str],
) -> None:
    """The request's head was read, so its valid X-Request-ID is the answer's."""
    url, admin = quick
    with connect(url) as sock:
        sock.sendall(
            b"POST /v1/api-keys HTTP/1.1\r\nHost: x\r\nX-Request-ID: client-7\r\n"
            + f"Authorization: Bearer {admin}\r\n".encode()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b'5\r\n{"nam\r\n'
        )
        time.sleep(0.3)  # the handler is reading the body
        sock.sendall(b"not-hex\r\n")
        answer = read_until_closed(sock)
    error = assert_envelope(answer, 400, "validation_error")
    assert error["request_id"] == "client-7"


def expecting_continue(admin: str, framing: bytes) -> bytes:
    """The head of a create that waits for ``100 Continue`` before its body."""
    return (
        b"POST /v1/api-keys HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        + f"Authorization: Bearer {admin}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + framing
        + b"\r\n"
    )


def interim_answer(sock: socket.socket) -> bytes:
    """What the server sends before the body: one head, up to its blank line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        assert chunk, f"closed before an interim answer: {data!r}"
        data += chunk
    return data


@skip_on_granian
def test_expect_100_continue_is_answered_before_the_body_is_sent(
    quick: tuple[ServerURL, str],
) -> None:
    """The interim 100 goes out on its own, before the final answer (the
    handler's first read of the body sends it; the front end batches a
    response's writes, keystile/server/output.py)."""
    url, admin = quick
    body = json.dumps(
        {"name": f"continued-{time.time_ns()}", "permissions": ["read:contacts"]}
    ).encode()
    with connect(url) as sock:
        sock.sendall(expecting_continue(admin, f"Content-Length: {len(body)}\r\n".encode()))
        assert interim_answer(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = parse(interim_answer(sock) + sock.recv(65536))
    assert status == 201, answer


@skip_on_granian
def test_a_framing_error_after_100_continue_is_answered_after_it(
    quick: tuple[ServerURL, str],
) -> None:
    """The front end's own 400 follows what the request already had written
    (the 100), never precedes or replaces it."""
    url, admin = quick
    with connect(url) as sock:
        sock.sendall(expecting_continue(admin, b"Transfer-Encoding: chunked\r\n"))
        assert interim_answer(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"not-hex\r\n")
        answer = read_until_closed(sock)
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert_envelope(answer, 400, "validation_error")


PIPELINED = {
    "malformed": (b"GET / HTTP/1.1\r\nA B: c\r\n\r\n", 400, "validation_error"),
    "too many fields": (GET + fields(100) + b"\r\n", 431, "request_header_fields_too_large"),
}


@skip_on_granian
@pytest.mark.parametrize("kind", PIPELINED)
def test_a_bad_pipelined_request_is_answered_after_the_good_ones(
    quick: tuple[ServerURL, str], kind: str
) -> None:
    url, _ = quick
    bad, status, code = PIPELINED[kind]
    with connect(url) as sock:
        sock.sendall(GET + b"\r\n" + GET + b"\r\n" + bad)
        answer = read_until_closed(sock)
    responses = answer.split(b"HTTP/1.1 ")[1:]
    assert [int(r[:3]) for r in responses] == [200, 200, status]
    assert_envelope(b"HTTP/1.1 " + responses[-1], status, code)
