"""The orchestrator's view of the one error tree (defined in workers.errors) and the exit codes.

    FnbenchError
    ├── InputError      a bad argument or file given on the command line
    │   └── SpecError   the spec is invalid: every problem, each with its YAML path
    └── SetupError      the machine cannot run it (port busy, toolchain missing, worker failed to start)
"""

from __future__ import annotations

from workers.errors import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_LOST_LOAD,
    EXIT_OK,
    EXIT_SLO,
    FnbenchError,
    InputError,
    RefusedError,
    SetupError,
    exit_code,
)

__all__ = ["EXIT_INPUT", "EXIT_INTERRUPTED", "EXIT_LOST_LOAD", "EXIT_OK", "exit_code", "EXIT_SLO", "FnbenchError", "InputError",
           "RefusedError", "SetupError", "SpecError"]


class SpecError(InputError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))
