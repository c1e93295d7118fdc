"""compose.yaml and deploy/nginx.conf agree with keystile's settings, the
Dockerfile and docs/deployment.md (no container runs here: these are the
checks that stand in for ``docker compose up``)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from keystile.idempotency.crypto import generate_key
from keystile.settings import Settings
from tests import dockerfile

ROOT = Path(__file__).parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
INSTANCES = ("keystile-1", "keystile-2")
SETTINGS = {f"KEYSTILE_{name.upper()}" for name in Settings.model_fields}
PORT = dockerfile.stages()[-1].one("EXPOSE")
# ${NAME:?message}: compose refuses to start while NAME is unset or empty.
POSTGRES_MAX_CONNECTIONS = 100  # PostgreSQL's default; compose.yaml keeps it
REQUIRED = re.compile(r"\$\{([A-Z_]+):\?[^}]+\}")


def deployment_section() -> str:
    text = (ROOT / "docs" / "deployment.md").read_text()
    return text.split("\n## Compose: two instances behind nginx\n", 1)[1].split("\n## ", 1)[0]


def nginx_conf() -> str:
    (mount,) = SERVICES["nginx"]["volumes"]
    source, target, _mode = str(mount).split(":")
    assert target == "/etc/nginx/conf.d/default.conf"
    return (ROOT / source).read_text()


def test_the_services_are_the_documented_ones() -> None:
    assert set(SERVICES) == {"postgres", "redis", *INSTANCES, "nginx"}
    # Only nginx is published; the instances are reached through it.
    assert SERVICES["nginx"]["ports"] == [f"{PORT}:{PORT}"]
    for name in ("postgres", "redis", *INSTANCES):
        assert "ports" not in SERVICES[name]
    for name in INSTANCES:
        assert SERVICES[name]["build"] == "."
        assert SERVICES[name]["expose"] == [PORT]


def test_both_instances_run_one_configuration_of_real_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = (SERVICES[name]["environment"] for name in INSTANCES)
    assert first == second
    assert set(first) <= SETTINGS
    # The secret key comes from the operator's environment, never the file.
    assert REQUIRED.fullmatch(first["KEYSTILE_SECRET_KEY"])
    assert REQUIRED.findall(first["KEYSTILE_SECRET_KEY"]) == ["KEYSTILE_SECRET_KEY"]

    postgres = SERVICES["postgres"]["environment"]
    database = urlsplit(REQUIRED.sub("password", first["KEYSTILE_DATABASE_URL"]))
    assert (database.scheme, database.hostname, database.port) == ("postgresql", "postgres", 5432)
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    assert REQUIRED.findall(first["KEYSTILE_DATABASE_URL"]) == REQUIRED.findall(
        postgres["POSTGRES_PASSWORD"]
    )
    assert urlsplit(first["KEYSTILE_REDIS_URL"]).hostname == "redis"

    # The values as keystile reads them (the required ones filled in).
    for name, value in first.items():
        monkeypatch.setenv(name, REQUIRED.sub("password", value))
    monkeypatch.setenv("KEYSTILE_SECRET_KEY", generate_key())
    settings = Settings()
    assert settings.database.startswith("postgresql://")
    assert settings.port == int(PORT)
    # Every process may open 2 x 2 x the pool size (docs/deployment.md).
    processes = len(INSTANCES) * settings.workers
    assert processes * 4 * settings.database_pool_size < POSTGRES_MAX_CONNECTIONS
    assert "command" not in SERVICES["postgres"]
    # A stop may take the shutdown timeout plus 10 s (docs/deployment.md).
    grace = int(SERVICES["keystile-1"]["stop_grace_period"].removesuffix("s"))
    assert grace > settings.shutdown_timeout_seconds + 10


def test_only_nginx_is_a_trusted_proxy() -> None:
    nginx_address = SERVICES["nginx"]["networks"]["backend"]["ipv4_address"]
    (subnet,) = COMPOSE["networks"]["backend"]["ipam"]["config"]
    assert ipaddress.ip_address(nginx_address) in ipaddress.ip_network(subnet["subnet"])
    for name in INSTANCES:
        environment = SERVICES[name]["environment"]
        assert environment["KEYSTILE_TRUSTED_PROXIES"] == nginx_address


def test_every_service_has_a_health_check_and_starts_after_what_it_needs() -> None:
    assert SERVICES["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert SERVICES["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    healthy = {"condition": "service_healthy"}
    for name in INSTANCES:
        service = SERVICES[name]
        # Readiness (database and Redis answer) gates nginx; the image's own
        # HEALTHCHECK, liveness, is the same command on /healthz.
        image_check = dockerfile.stages()[-1].exec_form("HEALTHCHECK")
        test = service["healthcheck"]["test"]
        assert test == ["CMD", *image_check[:-1], image_check[-1].replace("/healthz", "/readyz")]
        assert f"http://127.0.0.1:{PORT}/readyz" in test[-1]
        assert service["depends_on"] == {"postgres": healthy, "redis": healthy}
    nginx = SERVICES["nginx"]
    assert nginx["depends_on"] == dict.fromkeys(INSTANCES, healthy)
    assert f"http://127.0.0.1:{PORT}/healthz" in nginx["healthcheck"]["test"]


def test_nginx_balances_both_instances() -> None:
    conf = nginx_conf()
    upstream = re.search(r"upstream keystile \{(.*?)\n\}", conf, flags=re.S)
    assert upstream is not None
    servers = re.findall(r"^\s*server (\S+) max_fails=\d+ fail_timeout=\d+s;", upstream[1], re.M)
    assert servers == [f"{name}:{PORT}" for name in INSTANCES]
    assert re.search(rf"^\s*listen {PORT};", conf, flags=re.M)
    assert "proxy_pass http://keystile;" in conf
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    # nginx drops an idle upstream connection before keystile would.
    idle = re.search(r"keepalive_timeout (\d+)s;", upstream[1])
    assert idle is not None
    keystile_idle = SERVICES["keystile-1"]["environment"]["KEYSTILE_HTTP_KEEPALIVE_TIMEOUT_SECONDS"]
    assert int(idle[1]) < float(keystile_idle)


def test_the_docs_name_what_compose_sets() -> None:
    section = deployment_section()
    documented = set(re.findall(r"`(KEYSTILE_[A-Z_]+)`", section))
    assert documented >= set(SERVICES["keystile-1"]["environment"])
    for name in SERVICES:
        assert f"`{name}`" in section
    assert f"`{PORT}`" in section
