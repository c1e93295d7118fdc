"""Reads the project's Dockerfile for the tests that check it without a
container runtime (the subset of the syntax the Dockerfile uses)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

DOCKERFILE = Path(__file__).parents[1] / "Dockerfile"


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` stage: its base image, name and instructions in order."""

    base: str
    name: str | None
    instructions: tuple[tuple[str, str], ...]

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def one(self, instruction: str) -> str:
        (value,) = self.values(instruction)
        return value

    def env(self) -> dict[str, str]:
        """Every ``ENV NAME=value`` of the stage (later ones win)."""
        pairs = [pair for value in self.values("ENV") for pair in shlex.split(value)]
        return dict(pair.split("=", 1) for pair in pairs)

    def exec_form(self, instruction: str) -> list[str]:
        """The JSON (exec) form of ``ENTRYPOINT``, ``CMD`` or ``HEALTHCHECK``'s ``CMD``."""
        value = self.one(instruction)
        if instruction == "HEALTHCHECK":
            value = value.split(" CMD ", 1)[1]
        parsed = json.loads(value)
        assert isinstance(parsed, list)
        return [str(item) for item in parsed]


def stages(text: str | None = None) -> list[Stage]:
    """The Dockerfile's stages; continuation lines are joined, comments dropped."""
    text = DOCKERFILE.read_text() if text is None else text
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found: list[Stage] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        name, _, value = line.strip().partition(" ")
        value = " ".join(value.split())
        if name.upper() == "FROM":
            base, _, alias = value.partition(" AS ")
            found.append(Stage(base, alias or None, ()))
            continue
        last = found[-1]
        found[-1] = Stage(last.base, last.name, (*last.instructions, (name.upper(), value)))
    return found
