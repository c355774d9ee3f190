"""fnbench orchestrator: plans, dispatches, watches, collects and reports runs."""
