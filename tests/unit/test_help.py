"""Every --help reads as written: no markup eaten, no <str> metavars, no {SPEC} or [[RUN]]."""

import pytest
import typer
from typer.testing import CliRunner

from orchestrator.cli import app


def _commands() -> list[list[str]]:
    root = typer.main.get_command(app)
    out: list[list[str]] = [[]]
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        out.append([name])
        out += [[name, sub] for sub in getattr(cmd, "commands", {})]
    return out


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "fnbench")
def test_help_reads_as_written(path):
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    text = r.output
    for bad in ("<str>", "<int", "<path>", "<bool>", "{", "[[", "[/"):
        assert bad not in text, (bad, text)


def test_bracketed_defaults_in_help_texts_survive():
    assert "[default: one per core]" in " ".join(CliRunner().invoke(app, ["run", "--help"]).output.split())
    worker = " ".join(CliRunner().invoke(app, ["worker", "--help"]).output.split())
    assert "[default: one per core]" in worker and "[default: 0]" not in worker
