"""Dispatchers hand shards to run_shard(): local.py (process pool); Celery comes later."""
