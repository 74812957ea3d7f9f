"""Smoke tests of the benchmark's pure helpers: statistics, target judgement, report output."""
from __future__ import annotations

import json

import pytest

from bench import figures, report
from bench.stats import join_latencies, loss_pct, percentile, summarize_ms


def test_percentile_interpolates_between_ranks():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30], 0) == 10
    assert percentile([10, 20, 30], 100) == 30
    assert percentile(list(range(1, 1001)), 99) == pytest.approx(990.01)
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_summary_is_in_milliseconds_and_counts():
    s = summarize_ms([0.001] * 98 + [0.050, 0.100])
    assert s["n"] == 100
    assert s["p50_ms"] == 1.0
    assert s["max_ms"] == 100.0
    assert 1.0 < s["p99_ms"] <= 100.0
    assert summarize_ms([])["p50_ms"] is None


def test_join_latencies_counts_what_never_arrived():
    lat, lost = join_latencies({1: 10.0, 2: 11.0, 3: 12.0}, {1: 10.5, 3: 12.25, 9: 1.0})
    assert sorted(lat) == [0.25, 0.5]
    assert lost == 1


def test_loss_pct():
    assert loss_pct(1000, 900) == 10.0
    assert loss_pct(0, 5) is None


def _STEP(offered, p99, lost=0):
    return {"offered_deliveries_per_s": offered, "deliveries_per_s": offered * 0.98, "p99_ms": p99, "lost": lost}


RAW = {
    "capture": {"rows": 10000, "base": "abc1234",
                "capture_instructions_per_tx": {"ours": 170000, "reference_trigger": 150000, "ours_before": 250000},
                "bulk_insert_per_row": {"no_capture": 16000, "ours": 160000, "reference_trigger": 150000}},
    "relay_bench": {"drain": {"events_per_s": 60000, "insert_commit_per_s": 10000},
                    "writer_overhead": {"1": {"plain_tps": 1000, "capture_tps": 950},
                                        "8": {"plain_tps": 4000, "capture_tps": 3000}}},
    "latency": {"websocket@100": {"p50_ms": 1.5, "p99_ms": 8.0, "p999_ms": 9.0, "lost": 0}},
    "seed_latency": {"100": {"p50_ms": 0.3, "p99_ms": 2.0, "p999_ms": 3.0}},
    "throughput": {"steps": [{"rate": 1000, "achieved_rate": 990, "p99_ms": 20, "lost": 0},
                             {"rate": 10000, "achieved_rate": 9950, "p99_ms": 150, "lost": 0}]},
    "fanout_ours": {"1000": {"steps": [_STEP(50_000, 12), _STEP(100_000, 15), _STEP(150_000, 80)],
                             "best": _STEP(100_000, 15)}},
    "fanout_peer": {"1000": {"steps": [_STEP(50_000, 10), _STEP(100_000, 30)], "best": _STEP(50_000, 10)}},
    "connections_ours": {"5000": {"held": 5000, "kb_per_connection": 12.0}},
    "connections_peer": {"5000": {"held": 5000, "kb_per_connection": 20.0}},
    "resume": {"missed": 10000, "seconds": 0.4, "in_order": True},
    "relay_kill": {"committed": 100, "lost": 0}, "seed_kill": {"committed": 100, "lost": 3},
    "ours_race": {"committed": 50, "skipped": 0}, "polling_race": {"committed": 50, "skipped": 7},
}


def _met(figs, prefix):
    rows = [r for f in figs.values() for r in f["rows"] if r["figure"].startswith(prefix)]
    assert rows, prefix
    return [r["met"] for r in rows]


def test_the_fanout_search_stops_after_two_missed_steps_and_keeps_the_best():
    from bench import fanout

    offered = []

    def run_step(rate, seconds):
        offered.append(rate)
        p99 = 10 if rate <= 100 else 90
        return {"deliveries_per_s": rate * 1000 * 0.99, "p99_ms": p99, "lost": 0}

    result = fanout.search(run_step, 1000, [50_000, 100_000, 200_000, 400_000, 600_000], budget_s=60, warmup=1)
    # A warm-up, then up to the second miss in a row, then twice halfway between the best
    # and the next level up that missed.
    assert offered == [50, 50, 100, 200, 400, 150, 125]
    assert result["best"]["offered_deliveries_per_s"] == 100_000
    assert [s["offered_deliveries_per_s"] for s in result["steps"]] == [50_000, 100_000, 125_000, 150_000,
                                                                         200_000, 400_000]
    assert not fanout.step_ok({"p99_ms": 5, "lost": 1, "deliveries_per_s": 1, "offered_deliveries_per_s": 1})


def test_the_fanout_search_finds_a_ceiling_between_two_levels():
    from bench import fanout

    def run_step(rate, seconds):  # sustains up to 160 events/s to 1,000 subscribers
        return {"deliveries_per_s": rate * 1000 * 0.99, "p99_ms": 10 if rate <= 160 else 90, "lost": 0}

    result = fanout.search(run_step, 1000, [50_000, 100_000, 200_000, 400_000], budget_s=60)
    assert [s["offered_deliveries_per_s"] for s in result["steps"]] == [50_000, 100_000, 150_000, 175_000,
                                                                         200_000, 400_000]
    assert result["best"]["offered_deliveries_per_s"] == 150_000
    nothing = fanout.search(lambda rate, seconds: {"deliveries_per_s": 1, "p99_ms": 90, "lost": 0}, 1000,
                            [50_000, 100_000], budget_s=60)
    assert nothing["best"] is None and len(nothing["steps"]) == 2  # no gap to refine


def test_targets_are_judged_from_measurements():
    figs = figures.build(RAW)
    assert _met(figs, "0. Capture's") == [True]                 # 170k <= 173k
    assert _met(figs, "0. Capture / reference") == [True]       # 1.13
    assert _met(figs, "0. 10,000-row INSERT") == [False]        # 10% of bare rows/s
    assert "before (abc1234): 250,000" in figures.build(RAW)["capture"]["rows"][0]["figure"]
    assert _met(figs, "1. Writer overhead, 1 ") == [True]
    assert _met(figs, "1. Writer overhead, 8 ") == [False]      # 25% lost
    assert _met(figs, "1. Writer overhead, 32 ") == [None]      # not measured
    # Where the run measured the triggers alone, they are shown against the reference's.
    alone = {**RAW, "relay_bench": {"writer_overhead": {"8": {
        "plain_tps": 4000, "capture_tps": 2000, "capture_no_notify_loss_pct": 31.0, "reference_trigger_loss_pct": 29.5}}}}
    row = next(r for r in figures.build(alone)["writer_overhead"]["rows"] if r["figure"].startswith("1. Capture alone"))
    assert (row["figure"].split(",")[1].strip(), row["ours"], row["peer"], row["met"]) == (
        "8 writers (% tx/s lost; peer: reference row trigger)", 31.0, 29.5, None)
    assert not [r for r in figs["writer_overhead"]["rows"] if r["figure"].startswith("1. Capture alone")]
    assert _met(figs, "2. Relay drain") == [True]
    assert _met(figs, "3. Commit-to-client latency ws 100/s") == [True]
    assert _met(figs, "4.") == [False]                            # only 990/s met the p99
    # Ours sustained 100k/s against the peer's 50k/s (>= 1.5x); at 100k/s our p99 15 ms <= its 30.
    assert _met(figs, "5. Fan-out at saturation, 1,000 subscribers") == [True]
    assert _met(figs, "5. Fan-out 1,000 subscribers at 100k") == [True]
    behind = {**RAW, "fanout_ours": {"1000": {"steps": [_STEP(50_000, 70)], "best": None}}}
    assert _met(figures.build(behind), "5. Fan-out at saturation, 1,000 subscribers") == [False]
    assert _met(figs, "6.") == [True]
    assert _met(figs, "7.") == [True]
    assert _met(figs, "Publisher kill") == [True]
    assert _met(figs, "Out-of-order") == [True]


def _lat(p50, p99, relay, pg, hop=None):
    run = {"p50_ms": p50, "p99_ms": p99, "lost": 0, "cpu_ms_per_event": {"relay": relay, "postgres": pg}}
    return {**run, "commit_to_broker": {"p50_ms": hop}} if hop is not None else run


def test_the_claim_interval_trade_judges_the_streaming_transports_and_states_the_cost():
    trade = {"default": {"websocket": _lat(3.5, 7, 0.9, 0.8, hop=3.0), "xhr-streaming": _lat(3.7, 8, 0.9, 0.8),
                         "eventsource": _lat(4.0, 9, 1.0, 0.9)},
             "0": {"websocket": _lat(2.4, 6, 1.6, 1.5, hop=1.4), "xhr-streaming": _lat(1.9, 9, 1.5, 1.4),
                   "eventsource": _lat(2.2, 9, 1.7, 1.6)}}
    figs = figures.build({**RAW, "claim_interval": trade})
    assert _met(figs, "3. websocket 1000/s with OUTBOX_RELAY_CLAIM_INTERVAL=0") == [None]  # no target
    assert _met(figs, "3. xhr-streaming 1000/s with OUTBOX_RELAY_CLAIM_INTERVAL=0") == [True]
    assert _met(figs, "3. eventsource 1000/s with OUTBOX_RELAY_CLAIM_INTERVAL=0") == [False]  # p50 2.2
    cost = next(r for r in figs["latency"]["rows"] if r["figure"].startswith("3. What OUTBOX_RELAY_CLAIM_INTERVAL"))
    assert cost["ours"] == "commit->broker p50 1.40 ms · CPU per event: relay 1.600 + PostgreSQL 1.500 ms"
    assert cost["peer"] == "commit->broker p50 3.00 ms · CPU per event: relay 0.900 + PostgreSQL 0.800 ms"
    assert not [r for r in figures.build(RAW)["latency"]["rows"] if "CLAIM_INTERVAL" in r["figure"]]


def test_a_merged_run_remembers_every_phase_re_measured_and_when():
    from bench.run import remeasured_phases

    legacy = {"merged": "phases ['api', 'capture'] re-measured at T2; phases ['latency'] re-measured at T1; "
                        "the rest from the run of T0"}
    assert remeasured_phases(legacy) == {"api": "T2", "capture": "T2", "latency": "T1"}
    assert remeasured_phases({"remeasured": {"fanout": "T3"}, **legacy}) == {"fanout": "T3"}
    assert remeasured_phases({}) == {}


def test_missing_phases_are_not_measured_rather_than_guessed():
    figs = figures.build({})
    rows = [r for f in figs.values() for r in f["rows"]]
    assert rows and all(r["met"] is None for r in rows)


def _results():
    return {"meta": {"started": "now", "mode": "quick", "cpus": 2, "caveat": "noisy"},
            "figures": figures.build(RAW), "errors": {"fanout": "TimeoutError: x"}}


def test_markdown_table_lists_every_row_and_failed_phases():
    md = report.markdown(_results())
    assert "| Figure | Ours | Peer | Target | Met? |" in md
    assert "| 7. Resume after missing 10,000 events (s; in order: True) | 0.40 | — | < 1 s, all, in order | yes |" in md
    assert "fanout: did not run" in md and "> noisy" in md


def test_report_writes_json_md_and_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the chart needs the optional 'bench' extra (make bench installs it)")
    paths = report.write_all(_results(), tmp_path)
    assert json.loads(paths["json"].read_text())["meta"]["mode"] == "quick"
    assert paths["md"].read_text().startswith("# Benchmark results")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_claim_cost_claims_each_side_as_its_relay_does():
    # bench.claim_cost reads the relay's session setting out of relay.py: if the constant is
    # renamed, the bench would silently measure the claim with PostgreSQL's default plans.
    from bench import claim_cost
    from outbox_relay import relay

    here = claim_cost.side(None)
    assert here["session_sql"] == relay.GENERIC_PLANS_SQL
    assert list(here["migrations"]) == ["schema.sql"]
    head = claim_cost.side("HEAD")
    assert head["name"] == "HEAD" and list(head["migrations"]) == ["schema.sql"]
    before = claim_cost.side("dc207c9")  # the numbered history before the schema file
    assert "0001_outbox.sql" in before["migrations"] and list(before["migrations"]) == sorted(before["migrations"])


def test_fan_out_through_the_balancer_is_judged_by_what_was_lost():
    raw = {"scaleout": {
        "1": {"subscribers": 600, "deliveries_per_s": 99591.0, "p99_ms": 976.4, "lost": 0, "connected": 600,
              "failed": 0, "per_server": {"syncserver": 600},
              "idle": {"requested": 1500, "held": 1499, "kb_per_connection": 7.9, "balancer_kb_per_connection": 2.9}},
        "3": {"subscribers": 600, "deliveries_per_s": 71213.0, "p99_ms": 1669.1, "lost": 12, "connected": 600,
              "failed": 0, "per_server": {"syncserver": 200, "syncserver-2": 200, "syncserver-3": 200}},
    }}
    figs = figures.build(raw)
    assert _met(figs, "8. Fan-out through HAProxy, 1 ") == [True]
    assert _met(figs, "8. Fan-out through HAProxy, 3 ") == [False]  # 12 deliveries lost
    rows = figs["scaleout"]["rows"]
    assert "connections per server 200/200/200" in rows[3]["figure"]
    assert rows[4]["ours"] == "1669.1 / 12"
    assert _met(figs, "8. Through HAProxy, 1 sync server(s): idle") == [False]  # one not held
    assert "scaleout" in report.FIGURE_ORDER


def test_the_fanout_search_helpers_examples_hold():
    import doctest

    from bench import fanout

    assert doctest.testmod(fanout).failed == 0


def test_a_result_file_read_while_its_writer_is_still_writing_is_read_whole(tmp_path):
    import threading

    from bench.context import read_json

    path = tmp_path / "client.json"
    whole = json.dumps({"recv": {str(i): i / 1000 for i in range(1000)}})
    path.write_text(whole[:100])  # the child has written a first part only
    finisher = threading.Timer(0.3, path.write_text, (whole,))
    finisher.start()
    try:
        assert read_json(path, timeout=5) == json.loads(whole)
    finally:
        finisher.join()
    path.write_text(whole[:100])
    with pytest.raises(json.JSONDecodeError):  # never completed: the parse error, at the timeout
        read_json(path, timeout=0.2)
