"""Errors the orchestrator turns into exit code 2 with a clear message.

    FnbenchError
    ├── SpecError       the spec is invalid: every problem, each with its YAML path
    ├── InputError      a bad argument or file given on the command line
    └── SetupError      the machine cannot run it (port busy, toolchain missing, worker failed to start)
"""

from __future__ import annotations


class FnbenchError(Exception):
    """Base of every error fnbench reports to the user as exit code 2."""


class SpecError(FnbenchError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))


class InputError(FnbenchError):
    pass


class SetupError(FnbenchError):
    pass
