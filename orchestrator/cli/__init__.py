"""The `fnbench` command line: it parses arguments and prints; the work is done in orchestrator.session
and the modules it calls.  Commands live by subject in runs.py, subjects.py and schedules.py; an error
anywhere below is an ``FnbenchError``, which ``main()`` turns into its message and exit code, once.

Exit codes: 0 ok · 1 an SLO (or calibration tolerance) failed · 2 bad input or setup error ·
3 the result is partial (load lost, or unreadable records left out) · 130 interrupted (partial
results were still written).
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.markup import escape

from orchestrator.cli import runs, schedules, subjects
from orchestrator.cli.common import err
from orchestrator.errors import FnbenchError, SpecError


def _plain_metavars() -> None:
    """typer 0.29 writes a required argument as {SPEC} and a value as <str>; the plain forms (SPEC,
    TEXT, N, PATH) read as written.  Only how help is printed changes; typer is pinned."""
    from typer import core

    names = {"str": "TEXT", "int": "N", "int range": "N", "float": "NUMBER", "float range": "NUMBER",
             "path": "PATH", "file": "PATH", "directory": "DIR", "bool": "BOOLEAN"}
    shown = core._TyperParameter.display_type

    def display_type(self: Any, ctx: Any) -> str:
        label = str(shown(self, ctx)).removeprefix("<").removesuffix(">")
        return names.get(label, label.upper())

    def usage(self: Any) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return str(name) + ("..." if self.nargs != 1 else "")

    if hasattr(core, "_TyperParameter") and hasattr(core.TyperArgument, "_usage_display_name"):
        core._TyperParameter.display_type = display_type  # type: ignore[method-assign]
        core.TyperArgument._usage_display_name = usage  # type: ignore[method-assign]


_plain_metavars()
app = typer.Typer(
    name="fnbench",
    help=(
        "Open-model load generator for comparing serverless functions (Rust vs Go, Node, Python).\n\n"
        "Start with `fnbench calibrate` (check the numbers on this machine), then "
        "`fnbench run examples/loopback.yaml`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich markup would eat "[default: …]" in help texts and show <bool> metavars.
    rich_markup_mode=None,
)
for command in (*runs.COMMANDS, *schedules.COMMANDS):
    app.command()(command)
for name, group in {**subjects.GROUPS, **schedules.GROUPS}.items():
    app.add_typer(group, name=name)


def report_error(exc: FnbenchError) -> None:
    """An error in the user's words: a spec's problems one per line with their YAML paths, else one line."""
    if isinstance(exc, SpecError):
        err.print(f"[red]invalid spec[/] {escape(exc.source)}: {len(exc.problems)} problem(s)", highlight=False)
        for p in exc.problems:
            err.print(f"  - {p}", highlight=False, markup=False)
    else:
        err.print(f"[red]error[/]: {escape(str(exc))}", highlight=False)


def main() -> None:
    try:
        app()
    except FnbenchError as exc:
        report_error(exc)
        sys.exit(exc.exit_code)
