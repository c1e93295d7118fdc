"""nginx and Caddy in front of an upstream, asking keystile first: the shipped
examples (``examples/nginx/keystile.conf``, ``examples/caddy/Caddyfile``) run
as they are, only their example addresses replaced by the ports given.

Used by tests/e2e/test_forward_auth_proxies.py and for benchmarks of forward
authentication (docs/forward-auth.md)::

    with proxies.nginx(keystile_port, upstream_port, work_dir) as url:
        ...  # url: http://127.0.0.1:<port>, nginx -> keystile /v1/auth -> upstream

keystile must run with a routes file covering the paths requested (routes
without ``upstream``, e.g. ``examples/forward-auth-routes.toml``) and
``KEYSTILE_TRUSTED_PROXIES=127.0.0.1``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bench.run import ROOT, free_port, installed

EXAMPLES = ROOT / "examples"
NGINX_EXAMPLE = EXAMPLES / "nginx" / "keystile.conf"
CADDY_EXAMPLE = EXAMPLES / "caddy" / "Caddyfile"
FORWARD_AUTH_ROUTES = EXAMPLES / "forward-auth-routes.toml"

# The example addresses of every shipped proxy example, documented at the top
# of each file: where the proxy listens, keystile, the API; Caddy's admin API.
LISTEN, KEYSTILE, API, CADDY_ADMIN = (
    "127.0.0.1:8000",
    "127.0.0.1:8080",
    "127.0.0.1:9001",
    "127.0.0.1:2019",
)

# What a test needs around the example's server block: logs, the pid file and
# temporary files in the work directory, nothing under /var.
_NGINX_MAIN = """\
worker_processes {workers};
error_log {work}/error.log notice;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/keystile.conf;
}}
"""


def configured(example: Path, addresses: Mapping[str, str]) -> str:
    """The text of ``example`` with each example address replaced; an address
    the example no longer contains is an error (the example changed)."""
    text = example.read_text()
    for placeholder, address in addresses.items():
        if placeholder not in text:
            raise ValueError(f"{example} no longer contains {placeholder}")
        text = text.replace(placeholder, address)
    return text


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}: {log.read_text()}") from None
            time.sleep(0.05)


@contextmanager
def _running(
    command: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for_port(process, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _addresses(keystile_port: int, upstream_port: int, port: int) -> dict[str, str]:
    """Each example address and the loopback address replacing it."""
    return {
        LISTEN: f"127.0.0.1:{port}",
        KEYSTILE: f"127.0.0.1:{keystile_port}",
        API: f"127.0.0.1:{upstream_port}",
    }


def _program(name: str) -> str:
    binary = installed(name)
    if binary is None:
        raise RuntimeError(f"{name} is not installed and could not be installed (apt-get)")
    return binary


@contextmanager
def nginx(
    keystile_port: int, upstream_port: int, work: Path, *, port: int | None = None, workers: int = 1
) -> Iterator[str]:
    """nginx with examples/nginx/keystile.conf on ``port`` (a free one by
    default), asking keystile on ``keystile_port`` and serving the upstream on
    ``upstream_port``; yields its URL. Its logs go to ``work/error.log``."""
    port = port or free_port()
    server = configured(NGINX_EXAMPLE, _addresses(keystile_port, upstream_port, port))
    with _nginx_serving(server, port, work, workers) as url:
        yield url


# nginx proxying the same upstream with no authentication: the baseline that
# forward authentication is measured against (docs/benchmarks.md). Same
# keep-alive settings as the example's `api` upstream.
_NGINX_ALONE = """\
upstream api {{
    server 127.0.0.1:{upstream_port};
    keepalive 16;
}}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://api;
    }}
}}
"""


@contextmanager
def nginx_alone(
    upstream_port: int, work: Path, *, port: int | None = None, workers: int = 1
) -> Iterator[str]:
    """nginx proxying ``upstream_port`` with no authentication (the baseline
    of the forward-auth benchmark), run as :func:`nginx`; yields its URL."""
    port = port or free_port()
    server = _NGINX_ALONE.format(upstream_port=upstream_port, port=port)
    with _nginx_serving(server, port, work, workers) as url:
        yield url


@contextmanager
def _nginx_serving(server: str, port: int, work: Path, workers: int) -> Iterator[str]:
    """nginx running ``server`` (the blocks inside ``http { }``) from ``work``."""
    binary = _program("nginx")
    work.mkdir(parents=True, exist_ok=True)
    (work / "keystile.conf").write_text(server)
    (work / "nginx.conf").write_text(_NGINX_MAIN.format(work=work, workers=workers))
    command = [binary, "-e", str(work / "error.log"), "-c", str(work / "nginx.conf"),
               "-g", f"daemon off; pid {work}/nginx.pid;"]  # fmt: skip
    with _running(command, port, work / "error.log") as url:
        yield url


@contextmanager
def caddy(
    keystile_port: int, upstream_port: int, work: Path, *, port: int | None = None
) -> Iterator[str]:
    """Caddy with examples/caddy/Caddyfile, as :func:`nginx`. Its state
    (HOME, XDG directories) and its log stay in ``work``."""
    binary = _program("caddy")
    port = port or free_port()
    work.mkdir(parents=True, exist_ok=True)
    addresses = _addresses(keystile_port, upstream_port, port)
    addresses[CADDY_ADMIN] = f"127.0.0.1:{free_port()}"
    (work / "Caddyfile").write_text(configured(CADDY_EXAMPLE, addresses))
    env = {
        **os.environ,
        "HOME": str(work),
        "XDG_CONFIG_HOME": str(work),
        "XDG_DATA_HOME": str(work),
    }
    command = [binary, "run", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"]
    with _running(command, port, work / "caddy.log", env) as url:
        yield url
