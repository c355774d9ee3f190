"""Renderings of a RunResult: terminal tables, result.json; all from the same dict."""
