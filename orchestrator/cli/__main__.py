"""`python -m orchestrator.cli`: the fnbench command line."""

from orchestrator.cli import main

main()
