"""The live view of a running benchmark: elapsed/remaining, intended vs achieved req/s, p50/p99, errors.

On a terminal it is a rich Live table; otherwise (CI, pipes) a progress line every few seconds.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.console import Group as Lines
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.run.collect import Collector
from orchestrator.run.result import Group

_WINDOW_S = 10.0


def _recent_rates(group: Group, now: float) -> tuple[float, float]:
    recent = [s for s in group.series if s[0] >= now - _WINDOW_S]
    if not recent:
        return 0.0, 0.0
    span = max(now - min(s[0] for s in recent), 1.0) if len(recent) > 1 else _WINDOW_S
    return sum(s[1] for s in recent) / span, sum(s[2] for s in recent) / span


class LiveView:
    def __init__(self, collector: Collector, started: float, total_s: float, console: Console | None = None,
                 live: bool = True) -> None:
        self.collector = collector
        self.enabled = live
        self.started = started
        self.total_s = total_s
        self.console = console or Console(stderr=True)
        self.live: Live | None = None
        self.last_line = 0.0

    def __enter__(self) -> LiveView:
        if self.enabled and self.console.is_terminal:
            self.live = Live(self.render(), console=self.console, refresh_per_second=2, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def render(self) -> Lines:
        now = time.time()
        elapsed = max(0.0, now - self.started)
        head = Text(f"elapsed {elapsed:6.1f}s   remaining {max(0.0, self.total_s - elapsed):6.1f}s")
        table = Table(header_style="bold")
        for col in ("region", "target", "phase", "intended/s", "achieved/s", "p50 ms", "p99 ms", "errors"):
            table.add_column(col)
        for g in self.collector.group_rows():
            intended, achieved = _recent_rates(g, now)
            r = g.response_ms
            table.add_row(
                g.region, g.target, g.phase, f"{intended:.0f}", f"{achieved:.0f}",
                "-" if r.p50 is None else f"{r.p50:.2f}",
                "-" if r.p99 is None else f"{r.p99:.2f}", str(g.errors),
            )
        return Lines(head, table)

    def update(self) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(self.render())
            return
        now = time.time()
        if now - self.last_line >= 5.0:
            self.last_line = now
            groups = self.collector.group_rows()
            regions = len({g.region for g in groups}) > 1
            parts = []
            for g in groups:
                name = f"{g.region}/{g.target}" if regions else g.target
                p99 = "-" if g.response_ms.p99 is None else f"{g.response_ms.p99:.2f}"
                parts.append(f"{name} {g.phase}: {g.completed} done, p99 {p99} ms")
            elapsed = now - self.started
            clock = (f"[{elapsed:5.1f}s/{self.total_s:.0f}s]" if elapsed <= self.total_s
                     else f"[{self.total_s:.0f}s +{elapsed - self.total_s:.1f}s finishing]")
            idle = "waiting for the first intervals" if elapsed > 0 else "starting…"
            # One line per update, never wrapped (CI logs and pipes are read line by line).
            self.console.print(f"{clock} " + ("; ".join(parts) or idle), soft_wrap=True, highlight=False,
                               markup=False)
