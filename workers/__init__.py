"""fnbench workers: execute shards and emit Interval records; never import orchestrator."""
