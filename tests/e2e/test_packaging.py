"""The packages and the container image (issue #16).

The wheel and the sdist are built with ``python -m build`` from exactly the
files the Dockerfile's build stage copies, and carry what the installed
service reads from its own directory. No container runtime runs here, so no
image is built: the Dockerfile's final stage is reproduced instead, its own
install line run as written with its absolute paths moved under a temporary
directory, and ``keystile serve`` started from there as the image's
non-root uid (docs/deployment.md, "Container image").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keystile.idempotency.crypto import generate_key
from tests import dockerfile
from tests.conftest import require, require_service
from tests.support import (
    LEDGER,
    PG_HOST,
    PG_PORT,
    VENV_BIN,
    free_port,
    keystile_env,
    postgres_url,
    psql,
    serving,
)

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src" / "keystile"
MIGRATIONS = "storage/sql/migrations"
# setuptools says this when PYTHONDONTWRITEBYTECODE is set, as it is here.
HARMLESS = re.compile(r"byte-compiling is disabled")


def packaged_files() -> set[str]:
    """What the installed service reads besides its modules: the migrations
    (run on start), the routes example, the console's templates and static
    files (contract §16) and the typing marker."""
    versions = (PACKAGE / MIGRATIONS / "versions").glob("*.py")
    console = [
        path.relative_to(PACKAGE).as_posix()
        for folder in ("templates", "static")
        for path in (PACKAGE / "console" / folder).iterdir()
    ]
    return {
        "py.typed",
        *console,
        "gateway/examples/routes.toml",
        f"{MIGRATIONS}/env.py",
        f"{MIGRATIONS}/script.py.mako",
        *(f"{MIGRATIONS}/versions/{path.name}" for path in versions),
    }


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path
    log: str


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The wheel and sdist, built once for the module from the build stage's
    ``COPY`` sources alone (so the Dockerfile copies enough to build)."""
    context = tmp_path_factory.mktemp("context")
    for copy in dockerfile.stages()[0].values("COPY"):
        *sources, _target = copy.split()
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
                shutil.copytree(origin, context / source, ignore=ignore)
            else:
                shutil.copy2(origin, context / source)
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(context)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    log = built.stdout + built.stderr
    assert built.returncode == 0, log[-4000:]
    (wheel,) = out.glob("keystile-*.whl")
    (sdist,) = out.glob("keystile-*.tar.gz")
    return Dist(wheel, sdist, log)


def test_the_build_is_clean(dist: Dist) -> None:
    warnings = [
        line
        for line in dist.log.splitlines()
        if "warning" in line.lower() and not HARMLESS.search(line)
    ]
    assert warnings == []


def test_the_wheel_carries_the_migrations_the_routes_example_and_py_typed(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
        info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/WHEEL"))
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
        example = wheel.read("keystile/gateway/examples/routes.toml")
    assert {f"keystile/{name}" for name in packaged_files()} <= names
    # Only the package: no tests, benchmarks or examples beside it.
    assert {name.split("/")[0] for name in names} == {"keystile", info}
    assert "keystile = keystile.cli:main" in entry_points
    # examples/routes.toml (docs/gateway.md) is the packaged file itself.
    assert (ROOT / "examples" / "routes.toml").read_bytes() == example


def test_the_sdist_carries_the_same_files(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        names = set(sdist.getnames())
    top = dist.sdist.name.removesuffix(".tar.gz")
    assert {f"{top}/src/keystile/{name}" for name in packaged_files()} <= names
    assert {f"{top}/{name}" for name in ("pyproject.toml", "README.md", "LICENSE")} <= names


def test_the_dockerfile_follows_the_image_rules() -> None:
    build, final = dockerfile.stages()
    assert build.base == final.base == "python:3.11-slim"
    assert build.name is not None
    # The final stage takes the built wheel and nothing else from the build stage.
    copied = [value for value in final.values("COPY") if value.startswith("--from=")]
    assert copied == [f"--from={build.name} /dist/ /tmp/wheels/"]
    final_runs = " ".join(final.values("RUN"))
    for tool in ("python -m build", "apt-get", "gcc", "build-essential"):
        assert tool not in final_runs
    # A fixed non-root uid, the one the useradd line creates.
    uid, gid = final.one("USER").split(":")
    assert int(uid) >= 1000 and int(gid) >= 1000
    assert f"--uid {uid}" in final_runs and f"--gid {gid}" in final_runs
    env = final.env()
    assert final.one("VOLUME") == env["KEYSTILE_DATA_DIR"] == "/data"
    assert env["KEYSTILE_HOST"] == "0.0.0.0"
    assert final.one("EXPOSE") == env["KEYSTILE_PORT"] == "8080"
    assert final.exec_form("HEALTHCHECK")[-1].count("'http://127.0.0.1:8080/healthz'") == 1
    assert final.exec_form("ENTRYPOINT") == ["keystile"]
    assert final.exec_form("CMD") == ["serve"]


def test_the_dockerignore_lets_every_copied_source_through() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    build, final = dockerfile.stages()
    sources = {
        source
        for stage in (build, final)
        for copy in stage.values("COPY")
        if not copy.startswith("--from=")
        for source in copy.split()[:-1]
    }
    assert sources <= allowed


@dataclass(frozen=True)
class Image:
    """The final stage reproduced on this machine: ``root`` stands for the
    image's ``/``."""

    root: Path
    uid: int
    gid: int
    stage: dockerfile.Stage

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def moved(self, text: str) -> str:
        """``text`` with every absolute path moved under ``root``."""
        return re.sub(r"(?:^|(?<=[\s:]))/(?=[a-z])", f"{self.root}/", text)

    def as_user(self, *argv: str) -> list[str]:
        """``argv`` run as the image's uid and gid (the tests run as root here)."""
        if os.geteuid() != 0:
            return list(argv)  # already not root
        setpriv = shutil.which("setpriv")
        require(setpriv is not None, "setpriv (util-linux) is not installed")
        assert setpriv is not None
        return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *argv]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the image's process: its ``ENV`` with the paths moved."""
        env = keystile_env(self.path("/data"))
        for name, value in self.stage.env().items():
            env[name] = self.moved(value).replace("$PATH", os.environ["PATH"])
        env["HOME"] = str(self.path("/data"))
        env.update(extra)
        return env


def reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner may run ``path`` (every directory
    above it searchable, the file executable, by others)."""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in (real, *real.parents))


def python_for_the_image_user() -> Path:
    """A Python 3.11 the image's user can run: this one unless it lives where
    only root may go (a pyenv under /root), else the system's."""
    candidates = [Path(sys._base_executable), Path("/usr/bin/python3.11")]  # type: ignore[attr-defined]
    usable = [p for p in candidates if p.exists() and reachable_by_others(p)]
    require(bool(usable), "no Python 3.11 that a non-root user may run")
    return usable[0]


@pytest.fixture(scope="module")
def image(dist: Dist) -> Iterator[Image]:
    final = dockerfile.stages()[-1]
    uid, gid = map(int, final.one("USER").split(":"))
    # Not under pytest's temporary directory, which only root may enter.
    root = Path(tempfile.mkdtemp(prefix="keystile-image-"))
    root.chmod(0o755)
    reproduced = Image(root, uid, gid, final)
    try:
        # The image's `python` (/usr/local/bin/python in python:3.11-slim).
        bin_dir = root / "usr" / "local" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").symlink_to(python_for_the_image_user())
        for copy in final.values("COPY"):
            *sources, target = copy.split()
            destination = reproduced.path(target)
            if sources[0].startswith("--from="):
                destination.mkdir(parents=True)
                shutil.copy2(dist.wheel, destination)
            else:
                (source,) = sources
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, destination)
        (install,) = [run for run in final.values("RUN") if "pip install" in run]
        installed = subprocess.run(
            ["bash", "-euc", reproduced.moved(install)],
            cwd=root, env={**keystile_env(root), "PATH": f"{bin_dir}:{os.environ['PATH']}"},
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert installed.returncode == 0, (installed.stdout + installed.stderr)[-4000:]
        # RUN mkdir /data && chown keystile:keystile /data && chmod 0700 /data
        data = reproduced.path(final.one("VOLUME"))
        data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(data, uid, gid)
        yield reproduced
    finally:
        shutil.rmtree(root, ignore_errors=True)


def keystile_as_user(image: Image, env: dict[str, str], *args: str) -> str:
    """One CLI command of the installed package, as the image's user: its output."""
    done = subprocess.run(
        image.as_user(str(image.path("/opt/keystile/bin/keystile")), *args),
        cwd=image.path("/data"), env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def health_check(image: Image, env: dict[str, str], port: int) -> bool:
    """The image's HEALTHCHECK command, as the image's user, against ``port``."""
    argv = [item.replace(":8080/", f":{port}/") for item in image.stage.exec_form("HEALTHCHECK")]
    done = subprocess.run(
        image.as_user(*argv), env=env, capture_output=True, timeout=30, check=False
    )
    return done.returncode == 0


def test_the_installed_wheel_serves_as_the_image_user(image: Image, tmp_path: Path) -> None:
    """``keystile serve`` from the fresh venv, as uid 10001, from the data
    directory (outside the source tree): migrations, the routes example and
    the health check all come from the installed package."""
    python = str(image.path("/opt/keystile/bin/python"))
    probe = (
        "import importlib.resources, json, keystile; from keystile.storage.sql import migrate; "
        "print(json.dumps([keystile.__file__, str(migrate._SCRIPTS), "
        "str(importlib.resources.files('keystile.gateway') / 'examples' / 'routes.toml')]))"
    )
    env = image.env(KEYSTILE_HOST="127.0.0.1")  # loopback here, 0.0.0.0 in the image
    found = subprocess.run(
        image.as_user(python, "-c", probe), cwd=image.path("/data"), env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    package, migrations, routes = json.loads(found.stdout)
    venv = str(image.path("/opt/keystile"))
    assert all(path.startswith(venv) for path in (package, migrations, routes))
    env["KEYSTILE_ROUTES"] = routes

    port = free_port()
    assert not health_check(image, env, port)  # nothing serves yet: the check can fail

    keystile = str(image.path("/opt/keystile/bin/keystile"))
    log = tmp_path / "server.log"
    with serving(
        env, port=port, log=log, command=image.as_user(keystile), cwd=image.path("/data")
    ) as url:
        status = Path(f"/proc/{url.pid}/status").read_text()
        real_uid = int(re.findall(r"^Uid:\s+(\d+)", status, flags=re.M)[0])
        assert real_uid != 0
        if os.geteuid() == 0:
            assert real_uid == image.uid
        assert health_check(image, env, port)

        account = json.loads(keystile_as_user(image, env, "accounts", "create", "Acme", "--json"))
        made = keystile_as_user(
            image, env, "keys", "create", "--account", account["data"]["id"], "--name", "admin",
            "--permission", "admin:api_keys", "--permission", "verify:keys", "--json",
        )  # fmt: skip
        secret = json.loads(made)["data"]["key"]
        LEDGER.remember(secret)
        headers = {"Authorization": f"Bearer {secret}"}
        listed = httpx.get(f"{url}/v1/api-keys", headers=headers, timeout=10)
        assert listed.status_code == 200, listed.text
        assert [key["name"] for key in listed.json()["data"]] == ["admin"]
        verified = httpx.post(
            f"{url}/v1/keys/verify", headers=headers, json={"key": secret}, timeout=10
        )
        assert verified.status_code == 200, verified.text
        assert verified.json()["data"]["code"] == "VALID"

    # The embedded default lives in the volume, owned by the image's user.
    data = image.path("/data")
    for name in ("keystile.db", "secret.key"):
        stat = (data / name).stat()
        assert (stat.st_mode & 0o777) == 0o600
        if os.geteuid() == 0:
            assert (stat.st_uid, stat.st_gid) == (image.uid, image.gid)
    assert "Traceback" not in log.read_text()


def test_instances_starting_together_migrate_one_new_database(tmp_path: Path) -> None:
    """compose.yaml starts both instances at once on an empty database, and
    each migrates on start: the migration's advisory lock (migrations/env.py)
    makes the others wait and then find the schema current."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"kst_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {name}")
    try:
        env = keystile_env(
            tmp_path, KEYSTILE_DATABASE_URL=postgres_url(name), KEYSTILE_SECRET_KEY=generate_key()
        )
        processes = [
            subprocess.Popen(
                [str(VENV_BIN / "keystile"), "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [process.communicate(timeout=120) for process in processes]
        assert [process.returncode for process in processes] == [0] * 4, outputs
        assert psql("SELECT count(*) FROM alembic_version", name).strip() == "1"
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
