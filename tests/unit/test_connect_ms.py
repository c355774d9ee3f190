"""connect_ms beside service time: the Interval carries it, the collector merges it into the
Group with the connection counters, the result codec keeps it, the terminal table shows it."""

from rich.console import Console

from orchestrator.report.terminal import groups_table
from orchestrator.run.collect import Collector
from orchestrator.run.result import Group, RunResult
from workers import histograms
from workers.contract import HISTOGRAMS, Interval


def _interval(seq: int, connect: list[int], counters: dict[str, float]) -> Interval:
    def enc(values: list[int]) -> str:
        h = histograms.new_histogram()
        histograms.fill(h, values)
        return histograms.encode(h)

    return Interval(run_id="r", shard_id="s", attempt=0, seq=seq, region="local", target="t", runtime="rust",
                    phase="warm", t0=float(seq), t1=seq + 1.0, intended=10, sent=10, completed=10,
                    outcomes={"ok": 10}, response_us=enc([1000] * 10), service_us=enc([900] * 10),
                    send_lag_us=enc([100] * 10), connect_us=enc(connect), counters=counters)


def test_connect_ms_is_a_histogram_of_the_contract():
    assert ("connect", "connect_us", "connect_ms") in HISTOGRAMS
    iv = _interval(0, [2000], {"connections_opened": 1})
    assert Interval.from_json(iv.to_json()).connect_us == iv.connect_us
    assert Interval.from_dict({k: v for k, v in iv.to_dict().items() if k != "connect_us"}).connect_us == ""


def test_collector_merges_connect_times_and_connection_counters():
    c = Collector("r", {"warm": 2.0})
    c.add(_interval(0, [1000, 2000, 3000], {"connections_opened": 3, "connections_before_start": 3,
                                           "tls_resumed": 2}))
    c.add(_interval(1, [4000], {"connections_opened": 1, "tls_resumed": 1}))
    c.add(_interval(2, [], {}))
    (g,) = c.result().groups
    assert g.connect_ms is not None and g.connect_ms.p50 == 2.0 and abs(g.connect_ms.max - 4.0) < 0.01  # 3 digits
    assert (g.connections_opened, g.connections_before_start, g.tls_resumed) == (4, 3, 3)
    again = Group.from_dict(g.to_dict())
    assert again.connect_ms == g.connect_ms and again.tls_resumed == 3 and again.connections_opened == 4
    assert RunResult.from_dict(c.result().to_dict()).groups[0].connect_ms == g.connect_ms


def test_groups_without_connections_keep_their_json_and_table():
    c = Collector("r", {"warm": 1.0})
    c.add(_interval(0, [], {}))
    (g,) = c.result().groups
    assert g.connect_ms is None and "connect_ms" not in g.to_dict() and "connections_opened" not in g.to_dict()
    assert [col.header for col in groups_table([g]).columns][-1] == "lag p99"


def test_the_terminal_table_shows_connections_and_connect_p99():
    c = Collector("r", {"warm": 1.0})
    c.add(_interval(0, [1500] * 4, {"connections_opened": 4, "connections_before_start": 4, "tls_resumed": 3}))
    console = Console(width=250, record=True)
    console.print(groups_table(c.result().groups))
    text = console.export_text()
    assert "conns" in text and "connect p99" in text
    assert "4 (4 early, 3 resumed)" in text and "1.500" in text
