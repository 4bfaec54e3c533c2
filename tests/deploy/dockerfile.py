"""A small Dockerfile parser for tests: instructions, stages, flags, exec form and ENV pairs.

Follows the Dockerfile reference for what the tests look at: a trailing backslash continues
the line, comment lines (also inside a continuation) are dropped, JSON arrays are exec form,
global ``ARG`` defaults are substituted in ``FROM``. Heredocs are not supported.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

__all__ = ["Instruction", "Stage", "parse", "stages"]

_FLAG = re.compile(r"--([a-z-]+)=(\S+)\s+")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One instruction: its keyword (upper case), its arguments as one line, its first line."""

    keyword: str
    arguments: str
    line: int

    @property
    def flags(self) -> dict[str, str]:
        """Leading ``--name=value`` flags (COPY --from, HEALTHCHECK --interval, ...)."""
        return dict(_FLAG.findall(self._flagged()[0]))

    @property
    def rest(self) -> str:
        """The arguments after the leading flags."""
        return self._flagged()[1]

    def _flagged(self) -> tuple[str, str]:
        text = self.arguments + " "
        position = 0
        while match := _FLAG.match(text, position):
            position = match.end()
        return text[:position], text[position:].strip()

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for shell form."""
        return _json_array(self.rest)

    def env_pairs(self) -> dict[str, str]:
        """``ENV``/``LABEL`` key=value pairs (shell-style quoting)."""
        pairs = {}
        for word in shlex.split(self.arguments):
            key, sep, value = word.partition("=")
            if not sep:
                raise ValueError(f"line {self.line}: legacy 'ENV key value' form is not parsed")
            pairs[key] = value
        return pairs


def _json_array(text: str) -> list[str] | None:
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # Docker runs an invalid JSON array as shell form
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (and parser directives) and blank lines between instructions
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(part for part in pending if part)
        keyword, _, arguments = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    if pending:
        raise ValueError(f"line {start}: the file ends inside a continued instruction")
    return instructions


@dataclass(slots=True)
class Stage:
    """A build stage: its base image (ARGs substituted), its name, its instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """Every instruction of ``keyword`` in this stage, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        """The last ``keyword`` instruction: the one that takes effect."""
        found = self.all(keyword)
        return found[-1] if found else None

    def environment(self) -> dict[str, str]:
        """The ENV this stage sets (later values win)."""
        result: dict[str, str] = {}
        for instruction in self.all("ENV"):
            result.update(instruction.env_pairs())
        return result


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text
    )


def stages(instructions: list[Instruction]) -> list[Stage]:
    """Split into stages; global ARG defaults (before the first FROM) fill in FROM lines."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = _substitute(instruction.rest, global_args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(base=words[0], name=name))
        elif not found:
            if instruction.keyword == "ARG":
                key, _, value = instruction.arguments.partition("=")
                global_args[key.strip()] = value.strip()
        else:
            found[-1].instructions.append(instruction)
    return found
