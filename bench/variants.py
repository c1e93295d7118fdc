"""The builds a comparison runs (``python -m bench.compare --variant ...``).

A variant is a name, a git ref and extra environment variables:
``NAME=REF[:ENV=VALUE,...]``. ``HEAD`` means the working tree as it is (this
checkout's own ``.venv``); any other ref is built once into a virtualenv
cached under ``.bench-cache/builds/<commit>/`` and reused by later runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench-cache" / "builds"
WORKING_TREE = "HEAD"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A comma starts a new pair only when ``NAME=`` follows it, so a value may
# itself contain commas ("a,b") as long as no part of it looks like a pair.
_PAIR_SEPARATOR = re.compile(r",(?=[A-Za-z_][A-Za-z0-9_]*=)")


class VariantError(ValueError):
    """A ``--variant`` spec that cannot be used; the message says why."""


@dataclass(frozen=True)
class Variant:
    """One build and configuration to measure.

    ``env`` holds the extra environment of this variant's server and CLI, in
    the order given; it is applied after the harness's own defaults, so it
    can override them (e.g. a rate-limit tier).
    """

    name: str
    ref: str
    env: tuple[tuple[str, str], ...] = ()

    @property
    def is_working_tree(self) -> bool:
        return self.ref == WORKING_TREE


def parse_variant(spec: str) -> Variant:
    """``"after=HEAD:KEYSTILE_METERING=on,KEYSTILE_X=1"`` -> ``Variant``.

    The ref ends at the first ``:`` (git refs cannot contain one); the
    environment pairs are ``NAME=VALUE`` separated by commas, and a value may
    contain ``=``, ``:`` and commas not followed by ``NAME=``.

    Raises:
        VariantError: no ``=`` after the name, an empty or ill-formed name,
            ref or variable name, or an environment entry without ``=``.
    """
    name, equals, rest = spec.partition("=")
    if not equals:
        raise VariantError(f"{spec!r}: expected NAME=REF[:ENV=VALUE,...]")
    if not _NAME.fullmatch(name):
        raise VariantError(
            f"{spec!r}: the name must be letters, digits, '_', '.' or '-' (got {name!r})"
        )
    ref, colon, pairs = rest.partition(":")
    if not ref or any(c.isspace() for c in ref):
        raise VariantError(f"{spec!r}: the git ref is empty or has spaces")
    env: list[tuple[str, str]] = []
    if colon:
        if not pairs:
            raise VariantError(f"{spec!r}: nothing after ':' (give ENV=VALUE pairs or no ':')")
        for pair in _PAIR_SEPARATOR.split(pairs):
            key, has_value, value = pair.partition("=")
            if not has_value or not _ENV_NAME.fullmatch(key):
                raise VariantError(f"{spec!r}: {pair!r} is not ENV=VALUE")
            env.append((key, value))
    return Variant(name=name, ref=ref, env=tuple(env))


def parse_variants(specs: list[str]) -> list[Variant]:
    """Every spec parsed; names must be distinct.

    Raises:
        VariantError: as ``parse_variant``, or two variants share a name.
    """
    variants = [parse_variant(spec) for spec in specs]
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise VariantError(f"variant names must be distinct: {', '.join(repeated)}")
    return variants


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise VariantError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def describe(ref: str) -> str:
    """The commit a ref names, abbreviated; for ``HEAD`` with ``+dirty`` when
    the working tree has uncommitted changes to tracked files."""
    commit = _git("rev-parse", "--short", f"{ref}^{{commit}}")
    if ref == WORKING_TREE and _git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return commit


def bin_dir(ref: str) -> Path:
    """The ``bin/`` of a virtualenv where ``keystile`` runs the code of ``ref``.

    ``HEAD`` is this checkout's environment (the running interpreter's). Any
    other ref is resolved to a commit; its environment is built on first use
    (a throwaway git worktree, ``python -m venv``, ``pip install`` of that
    tree with its own constraints, from the same package sources as ``make
    install``), then kept under ``.bench-cache/builds/<commit>/``. The
    install is not editable: the worktree is removed once the package is in.

    Raises:
        VariantError: the ref names no commit, or the build failed (the pip
            output is in the message).
    """
    if ref == WORKING_TREE:
        return Path(sys.executable).parent
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except VariantError:
        raise VariantError(f"{ref!r} names no commit in this repository") from None
    home = CACHE / commit
    venv = home / "venv"
    stamp = home / "installed"
    if stamp.exists():
        return venv / "bin"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    print(f"building {ref} ({commit[:8]}) into {home.relative_to(ROOT)} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="keystile-variant-") as scratch:
        tree = Path(scratch) / "tree"
        _git("worktree", "add", "--detach", "--quiet", str(tree), commit)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            install = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            if (tree / "constraints.txt").exists():
                install += ["-c", str(tree / "constraints.txt")]
            done = subprocess.run(
                [*install, str(tree)], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                shutil.rmtree(home, ignore_errors=True)
                raise VariantError(f"pip install of {ref} failed:\n{done.stdout}{done.stderr}")
        finally:
            _git("worktree", "remove", "--force", str(tree))
    stamp.write_text(f"{ref}\n")
    return venv / "bin"
