"""What a user would pick instead of keystile, served for ``make bench``
(issue #19): each peer is installed from PyPI, pinned, in its own venv under a
cache directory outside the repository, and runs its app from
``bench/peer_apps/`` with one worker process::

    with peers.serving("drf-api-key", work_dir) as (url, header):
        ...  # GET {url}/v1/contacts with the header: a 200 with JSON

- ``drf-api-key``: a Django project protected by djangorestframework-api-key's
  ``HasAPIKey``, on gunicorn (sync worker); SQLite in ``work_dir``.
- ``fastapi-dict``: a FastAPI app checking the SHA-256 of the bearer token in
  a dict, on uvicorn with uvloop and httptools (as keystile and the bare app).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
APPS = Path(__file__).resolve().parent / "peer_apps"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keystile-bench"


@dataclass(frozen=True)
class Peer:
    """A peer: its title, what it does per request (both for
    docs/benchmarks.md), its pinned requirements, and the constraints file
    they are installed with (keystile's, where the peer shares its
    libraries, so that the front end is the same build)."""

    name: str
    title: str
    per_request: str
    requirements: tuple[str, ...]
    constraints: Path | None = None

    @property
    def config(self) -> str:
        """The peer's configuration in the results (row (i))."""
        return f"i. peer: {self.title}"


PEERS = {
    peer.name: peer
    for peer in (
        Peer(
            "drf-api-key",
            "djangorestframework-api-key, gunicorn",
            "gunicorn's sync worker reads one request per connection (it closes "
            "every connection after its response: no keep-alive), Django routes it, "
            "and DRF's `HasAPIKey` looks the key up by its prefix in SQLite (Django "
            "opens and closes the database connection per request by default), "
            "compares its SHA-512 in constant time and checks expiry and revocation; "
            "no rate limit, no usage count, no access log.",
            (
                "Django==5.2.19",
                "djangorestframework==3.18.3",
                "djangorestframework-api-key==3.1.0",
                "gunicorn==27.0.1",
            ),
        ),
        Peer(
            "fastapi-dict",
            "FastAPI + dict key check, uvicorn",
            "uvicorn (uvloop, httptools, as keystile) parses the request, FastAPI "
            "resolves an `HTTPBearer` dependency that looks the SHA-256 of the token "
            "up in a dict in memory, and the endpoint answers JSON; no revocation "
            "shared between workers, no rate limit, no usage count, no access log.",
            ("fastapi==0.165.0", "uvicorn==0.54.0", "uvloop==0.23.0", "httptools==0.9.0"),
            ROOT / "constraints.txt",
        ),
    )
}


def stamp(peer: Peer) -> str:
    """What a peer's venv was built from: a venv whose stamp differs is rebuilt."""
    lines = [sys.version.split()[0], *peer.requirements]
    if peer.constraints is not None:
        lines.append(hashlib.sha256(peer.constraints.read_bytes()).hexdigest())
    return "\n".join(lines) + "\n"


def venv(peer: Peer, cache: Path = CACHE) -> Path:
    """The ``bin`` directory of ``peer``'s venv, built (or rebuilt, when its
    requirements changed) under ``cache/peers-<name>``."""
    home = cache / f"peers-{peer.name}"
    bin_dir = home / "bin"
    marker = home / ".bench-stamp"
    wanted = stamp(peer)
    if marker.exists() and marker.read_text() == wanted:
        return bin_dir
    print(f"building the {peer.name} venv in {home}...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
    install = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", *peer.requirements]
    if peer.constraints is not None:
        install += ["-c", str(peer.constraints)]
    subprocess.run(install, check=True)
    marker.write_text(wanted)
    return bin_dir


@contextmanager
def serving(name: str, work: Path, cache: Path = CACHE) -> Iterator[tuple[str, str]]:
    """Peer ``name`` serving on a free loopback port with one worker process,
    its state and log in ``work``; yields its URL and the header a client
    sends (``Name: value``). Stopped on exit."""
    from bench.run import base_env, free_port, process  # (it imports this module)

    peer = PEERS[name]
    bin_dir = venv(peer, cache)
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = base_env(PEER_DATA_DIR=str(work))
    if name == "drf-api-key":
        key = subprocess.run(
            [str(bin_dir / "python"), "drf_api_key.py", "setup"],
            cwd=APPS, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        header = f"Authorization: Api-Key {key}"
        command = [str(bin_dir / "gunicorn"), "drf_api_key:application", "--workers", "1",
                   "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip
    else:
        key = secrets.token_urlsafe(32)
        env["PEER_KEY_DIGESTS"] = hashlib.sha256(key.encode()).hexdigest()
        header = f"Authorization: Bearer {key}"
        command = [str(bin_dir / "python"), "-m", "uvicorn", "--factory", "fastapi_dict:create_app",
                   "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
                   "--log-level", "warning", "--no-access-log"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with process(command, env, f"{url}/v1/contacts", work / f"{name}.log", cwd=APPS):
        # A peer refusing its own key would be measured answering errors.
        field, _, value = header.partition(": ")
        answer = httpx.get(f"{url}/v1/contacts", headers={field: value})
        if answer.status_code != 200 or answer.json() != {"contacts": []}:
            raise RuntimeError(f"{name} answered {answer.status_code} {answer.text[:200]}")
        yield url, header


def main() -> None:
    """``python -m bench.peers NAME``: serve one peer until interrupted
    (SIGINT or SIGTERM), printing a wrk command that measures it (for trying a
    peer by hand)."""
    import signal
    import tempfile
    import time

    # A background job starts with SIGINT ignored; either signal stops the peer.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)

    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in PEERS:
        raise SystemExit(f"usage: python -m bench.peers {{{','.join(PEERS)}}}")
    with (
        tempfile.TemporaryDirectory(prefix=f"peer-{name}-") as work,
        serving(name, Path(work)) as (url, header),
    ):
        print(f"wrk -t1 -c64 -d5s --latency -H '{header}' {url}/v1/contacts", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
