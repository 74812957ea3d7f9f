"""From raw measurements to figures: values, targets and whether each is met (pure, no I/O).

Raw keys are those bench.run fills; any may be missing (a phase failed or was skipped),
and then its rows say "not measured" instead of guessing.
"""
from __future__ import annotations

import statistics

from bench.fanout import P99_LIMIT_MS
from bench.stats import loss_pct


def _row(figure: str, ours, peer, target: str, met: bool | None) -> dict:
    return {"figure": figure, "ours": ours, "peer": peer, "target": target, "met": met}


def _le(value, limit) -> bool | None:
    return None if value is None else value <= limit


def _lt(value, limit) -> bool | None:
    return None if value is None else value < limit


def writer_overhead(raw: dict) -> dict:
    rb = raw.get("relay_bench") or {}
    ours = rb.get("writer_overhead") or {}
    seed = raw.get("seed_writer_cost") or {}
    rows = []
    for n in ("1", "8", "32"):
        o = ours.get(n) or ours.get(int(n)) or {}
        loss = o.get("loss_pct")
        if loss is None and o.get("plain_tps") is not None:
            loss = loss_pct(o.get("plain_tps"), o.get("capture_tps"))
        s = seed.get(n) or {}
        peer = loss_pct(s.get("plain_tps"), s.get("publish_tps")) if s else None
        rows.append(_row(f"1. Writer overhead, {n} writers (% tx/s lost; peer: seed publish-after-commit)",
                         loss, peer, "<= 10% (issue 16's before: 40-55%)", _le(loss, 10)))
    for n in ("1", "8", "32"):
        # Issue 3's reference designs measured on this machine in the same run: what any
        # trigger-written outbox row costs here, and what a NOTIFY per transaction adds.
        o = ours.get(n) or ours.get(int(n)) or {}
        ref, ref_notify = o.get("reference_trigger_loss_pct"), o.get("reference_trigger_notify_loss_pct")
        if ref is not None:
            rows.append(_row(f"1. Reference row trigger, {n} writers (% tx/s lost; peer: the same + pg_notify per tx)",
                             ref, ref_notify, "context (issue: -3/-10/-17% there)", None))
    for n in ("1", "8", "32"):
        # Ours as the reference is measured: the triggers alone, no relay (doorbell disarmed,
        # as a busy relay leaves it). The writer-overhead row above runs a relay that claims
        # and publishes on the same two cores; the gap between the two is the relay's share.
        o = ours.get(n) or ours.get(int(n)) or {}
        alone = o.get("capture_no_notify_loss_pct")
        if alone is not None:
            rows.append(_row(f"1. Capture alone (no relay; doorbell disarmed), {n} writers (% tx/s lost; peer: "
                             "reference row trigger)", alone, o.get("reference_trigger_loss_pct"),
                             "context: the triggers against the reference; the writer-overhead row adds the relay",
                             None))
    return {"rows": rows, "ours": ours, "seed": seed}


def api(raw: dict) -> dict:
    """Writers through the portal as deployed (bench.api_bench): REST and form writes with
    capture on against off, a single create's latency, the batch endpoint's items/s."""
    a = raw.get("api") or {}
    if not a:
        return {"rows": []}
    cells, losses = a.get("cells") or {}, a.get("loss_pct") or {}
    one = a.get("rest_create_1") or {}
    eight = (cells.get("rest_create/8/on") or {}).get("per_s")
    rows = [_row("1. REST single-item create at 1 client, p50 ms (peer: p99 ms), capture on",
                 one.get("p50_ms"), one.get("p99_ms"), "p50 <= 3 ms (issue 16's before: ~7 ms)",
                 _le(one.get("p50_ms"), 3)),
            _row("1. REST creates/s at 8 clients, capture on (peer: capture off)", eight,
                 (cells.get("rest_create/8/off") or {}).get("per_s"), ">= 400/s (issue 16's before: 150-260/s at 8-32)",
                 None if eight is None else eight >= 400)]
    labels = {"rest_create": "REST creates", "rest_edit": "REST edits", "form_create": "form adds (session + CSRF)",
              "form_edit": "form edits (session + CSRF)"}
    for kind, label in labels.items():
        for n in ("1", "8", "32"):
            on, off = cells.get(f"{kind}/{n}/on") or {}, cells.get(f"{kind}/{n}/off") or {}
            if not on:
                continue
            loss = losses.get(f"{kind}/{n}")
            rows.append(_row(f"1. {label}, {n} clients: % writes/s lost to capture "
                             f"(on {fmt_rate(on.get('per_s'))}/s; peer: off {fmt_rate(off.get('per_s'))}/s)",
                             loss, off.get("per_s"), "<= 10%", _le(loss, 10)))
    def cpu(cell: dict) -> str | None:
        parts = cell.get("cpu_ms_per_write") or {}
        return " · ".join(f"{name} {v:.2f}" for name, v in sorted(parts.items()) if v is not None) or None

    on8, off8 = cells.get("rest_create/8/on") or {}, cells.get("rest_create/8/off") or {}
    if cpu(on8):
        # Where capture's loss goes: CPU per write of each process, on a machine whose 2
        # cores all of them share with the load clients.
        rows.append(_row("1. CPU ms per REST create at 8 clients by process, capture on (peer: capture off)",
                         cpu(on8), cpu(off8), "context", None))
    for n, b in sorted((a.get("batch") or {}).items()):
        rows.append(_row(f"1. Batch endpoint, {a.get('batch_size')} creates per request, {n} client(s): items/s "
                         f"(peer: single REST creates/s at {n})", b.get("items_per_s"),
                         (cells.get(f"rest_create/{n}/on") or {}).get("per_s"), "n/a (no target)", None))
    return {"rows": rows, "measured": a}


def fmt_rate(value) -> str:
    return "—" if value is None else f"{value:,.0f}"


def capture(raw: dict) -> dict:
    """Instructions a writer pays for capture (bench.writer_cost), before and after."""
    c = raw.get("capture") or {}
    if not c:
        return {"rows": []}
    added, base = c.get("capture_instructions_per_tx") or {}, c.get("base")
    before = f"; before ({base}): {added['ours_before']:,}" if added.get("ours_before") is not None else ""
    ours, ref = added.get("ours"), added.get("reference_trigger")
    ratio = round(ours / ref, 2) if ours and ref else None
    rows = [_row(f"0. Capture's added instructions per single-row insert transaction (peer: reference row trigger{before})",
                 ours, ref, "<= ~173k (the issue's 1.15x of its reference)", None if ours is None else ours <= 173_000),
            _row("0. Capture / reference ratio", ratio, None, "<= 1.15", None if ratio is None else ratio <= 1.15)]
    for kind, key in (("INSERT", "bulk_insert_per_row"), ("UPDATE", "bulk_update_per_row")):
        d = c.get(key) or {}
        if not d.get("no_capture"):
            continue
        share = round(100 * d["no_capture"] / d["ours"], 1) if d.get("ours") else None
        ref_share = round(100 * d["no_capture"] / d["reference_trigger"], 1) if d.get("reference_trigger") else None
        was = f"; before: {d['ours_before']:,}" if d.get("ours_before") is not None else ""
        rows.append(_row(f"0. {c.get('rows', 10000):,}-row {kind}: instructions per row, no capture {d['no_capture']:,}"
                         f"; ours {d.get('ours'):,}{was} (ours: % of bare rows/s; peer: reference's)",
                         share, ref_share, ">= 70% of bare rows/s", None if share is None else share >= 70))
    return {"rows": rows, "measured": c}


def relay_drain(raw: dict) -> dict:
    rb = raw.get("relay_bench") or {}
    drain = rb.get("drain") or {}
    rate = drain.get("events_per_s")
    insert = drain.get("insert_commit_per_s")
    ratio = round(rate / insert, 2) if rate and insert else None
    met = None if rate is None else (rate >= 50_000 and (ratio is None or ratio >= 5))
    rows = [_row("2. Relay drain of a 100k backlog (events/s; peer: PostgreSQL insert-commit rate)",
                 rate, insert, ">= 50k/s and >= 5x insert rate", met),
            _row("2. Drain / insert-commit ratio", ratio, None, ">= 5x", None if ratio is None else ratio >= 5)]
    reference = drain.get("reference_claim_rows_per_s")
    if reference:
        # The issue sets 50k/s against "about 100k rows/s" for a bare UPDATE ... RETURNING of
        # 2,000 rows on its machines; the same statement measured here puts ours in scale.
        rows.append(_row("2. Drain / bare claim UPDATE ... RETURNING of 2,000 rows on this machine (peer: rows/s)",
                         round(rate / reference, 2) if rate else None, reference, ">= 0.5 (50k of ~100k there)",
                         None if not rate else rate / reference >= 0.5))
    chart = {"throughput": {"ours relay drain (ev/s)": rate, "PG insert-commit (tx/s)": insert}}
    return {"rows": rows, "chart": chart, "measured": drain}


def claim_interval_rows(trade: dict) -> list[dict]:
    """The relay's latency/CPU trade at 1,000 events/s (bench.latency.claim_interval_trade):
    each streaming transport with OUTBOX_RELAY_CLAIM_INTERVAL=0 against the default, and
    what the setting costs."""
    fast, default = trade.get("0") or {}, trade.get("default") or {}
    rows = []
    for transport in ("websocket", "xhr-streaming", "eventsource"):
        m, d = fast.get(transport) or {}, default.get(transport) or {}
        if m.get("p50_ms") is None:
            continue
        met = None
        target = "n/a (no target)"
        if transport != "websocket":
            target = "p50 <= 2, p99 <= 10 (issue 17, with this setting)"
            met = m["p50_ms"] <= 2 and m["p99_ms"] <= 10 and not m.get("lost")
        peer = f"{d['p50_ms']}/{d['p99_ms']} (lost {d.get('lost')})" if d.get("p50_ms") is not None else None
        rows.append(_row(f"3. {transport} 1000/s with OUTBOX_RELAY_CLAIM_INTERVAL=0, p50/p99 ms "
                         "(peer: the default interval, same run)", f"{m['p50_ms']}/{m['p99_ms']} (lost {m.get('lost')})",
                         peer, target, met))

    def cost(runs: dict) -> str | None:
        cpu = [r["cpu_ms_per_event"] for r in runs.values() if r.get("cpu_ms_per_event")]
        hop = [(r.get("commit_to_broker") or {}).get("p50_ms") for r in runs.values()]
        hop = [h for h in hop if h is not None]
        if not cpu or not hop:
            return None
        relay = statistics.median(c["relay"] for c in cpu)
        pg = statistics.median(c["postgres"] for c in cpu)
        return f"commit->broker p50 {statistics.median(hop):.2f} ms · CPU per event: relay {relay:.3f} + PostgreSQL {pg:.3f} ms"

    if rows:
        rows.append(_row("3. What OUTBOX_RELAY_CLAIM_INTERVAL=0 costs at 1000/s, medians of the runs above "
                         "(peer: the default interval)", cost(fast), cost(default), "context (docs/relay.md)", None))
    return rows


def latency(raw: dict) -> dict:
    lat = raw.get("latency") or {}
    seed = raw.get("seed_latency") or {}
    poll = raw.get("polling_latency") or {}
    rows, chart = [], {}
    for key, label in (("websocket@100", "ws 100/s"), ("websocket@1000", "ws 1000/s"),
                       ("xhr-streaming@100", "xhr-streaming 100/s"), ("xhr-streaming@1000", "xhr-streaming 1000/s"),
                       ("eventsource@100", "eventsource 100/s"), ("eventsource@1000", "eventsource 1000/s"),
                       ("xhr-polling@100", "xhr-polling 100/s"), ("xhr-polling@1000", "xhr-polling 1000/s")):
        m = lat.get(key) or {}
        rate = key.split("@")[1]
        s = seed.get(rate) or {}
        pl = poll.get(rate) or {}
        peer = None
        if s or pl:
            peer = " · ".join(x for x in (
                f"seed {s['p50_ms']}/{s['p99_ms']}/{s['p999_ms']}" if s.get("p50_ms") is not None else "",
                f"poll {pl['p50_ms']}/{pl['p99_ms']}/{pl['p999_ms']}" if pl.get("p50_ms") is not None else "",
            ) if x)
        ours = (f"{m['p50_ms']}/{m['p99_ms']}/{m['p999_ms']} (lost {m.get('lost')})"
                if m.get("p50_ms") is not None else None)
        target, met = "n/a (no target)", None
        if key == "websocket@100":
            target = "p50 < 2, p99 < 10"
            met = None if m.get("p50_ms") is None else (m["p50_ms"] < 2 and m["p99_ms"] < 10 and not m.get("lost"))
        elif key in ("xhr-streaming@1000", "eventsource@1000"):
            # Issue 17: every streaming transport as fast as websocket at 1,000 events/s.
            target = "p50 <= 2, p99 <= 10"
            met = None if m.get("p50_ms") is None else (m["p50_ms"] <= 2 and m["p99_ms"] <= 10 and not m.get("lost"))
        elif key.startswith("xhr-polling") and m.get("poll_rtt_ms") is not None:
            # Polling waits for the next poll: an event can wait one poll round trip (the
            # response's delivery plus the next request's arrival) beyond a streaming one.
            rtt = m["poll_rtt_ms"]
            target = f"bound: one poll round trip ({rtt['p50_ms']}/{rtt['p99_ms']} ms p50/p99) over streaming"
        rows.append(_row(f"3. Commit-to-client latency {label}, p50/p99/p99.9 ms (peers end at ZeroMQ)",
                         ours, peer, target, met))
        if m.get("p50_ms") is not None:
            chart[f"ours {label}"] = m
    rows += claim_interval_rows(raw.get("claim_interval") or {})
    page = raw.get("page_latency") or {}
    for key in ("websocket@100", "websocket@1000", "eventsource@100", "eventsource@1000",
                "xhr-streaming@100", "xhr-streaming@1000"):
        m = page.get(key)
        if m is None:
            continue
        transport, rate = key.split("@")
        ours = (f"{m['p50_ms']}/{m['p99_ms']}/{m['p999_ms']} ({m['n']} samples, all applied: {m.get('all_applied')})"
                if m.get("p50_ms") is not None else None)
        rows.append(_row(f"3. What users see: commit-to-page (chromium, DOM applied) {transport} {rate}/s, "
                         "p50/p99/p99.9 ms", ours, None, "n/a (issue 17: measured)", None))
        if m.get("p50_ms") is not None:
            chart[f"chromium page {transport} {rate}/s"] = m
    hop = (lat.get("websocket@100") or {}).get("commit_to_broker")
    if hop:
        chart["ours commit->ZeroMQ 100/s"] = hop
    for rate in ("100", "1000"):
        if (seed.get(rate) or {}).get("p50_ms") is not None:
            chart[f"seed direct {rate}/s (ZeroMQ)"] = seed[rate]
    if (poll.get("100") or {}).get("p50_ms") is not None:
        chart["polling relay 100/s (ZeroMQ)"] = poll["100"]
    notes = ("Peers' latencies end at a ZeroMQ subscriber (they have no sync server), ours at a browser-like "
             "client process behind the sync server; 'ours commit->ZeroMQ' in the chart is the comparable hop.")
    return {"rows": rows, "chart": {"latency": chart}, "notes": notes, "measured": lat}


def throughput(raw: dict) -> dict:
    steps = (raw.get("throughput") or {}).get("steps") or []
    ok = [s for s in steps if s.get("p99_ms") is not None and s["p99_ms"] < 100 and not s.get("lost")
          and s.get("achieved_rate", 0) >= 0.9 * s["rate"]]
    best = max(ok, key=lambda s: s["achieved_rate"], default=None)
    value = best["achieved_rate"] if best else (None if not steps else 0)
    # The ramp's 15,000/s step counts as sustained when it passes (>= 90% achieved, p99 < 100
    # ms, nothing lost); the target (issue 16) is that step.
    reached = max((s["rate"] for s in ok), default=None)
    rows = [_row("4. Sustained end-to-end events/s with p99 < 100 ms", value, None,
                 ">= 15,000/s (that step passed; issue 16's before: 9,998)",
                 None if value is None else (reached or 0) >= 15_000)]
    return {"rows": rows, "steps": steps, "chart": {"throughput": {"ours end-to-end (ev/s, p99<100ms)": value}}}


def _step_at(search: dict, offered: float) -> dict:
    return next((s for s in search.get("steps") or [] if s.get("offered_deliveries_per_s") == offered), {})


def _steps_text(search: dict) -> str | None:
    steps = search.get("steps") or []
    if not steps:
        return None
    return " · ".join(f"{int(s['offered_deliveries_per_s']) // 1000}k: " + (
        f"{s.get('p99_ms')} ms/{s.get('lost')} lost/{s.get('server_cpu_us_per_delivery')} µs CPU"
        if not s.get("error") else "error") for s in steps)


def fanout(raw: dict) -> dict:
    """Fan-out at saturation (bench.fanout.search): the highest deliveries/s each server sustained
    with p99 <= 50 ms and nothing lost, ours against sockjs-node's, and the p99s at 100k/s."""
    ours, peer = raw.get("fanout_ours") or {}, raw.get("fanout_peer") or {}
    rows, chart = [], {}
    for n in sorted({*ours, *peer}, key=int):
        o, p = ours.get(n) or {}, peer.get(n) or {}
        ob, pb = o.get("best") or {}, p.get("best") or {}
        od, pd = ob.get("deliveries_per_s"), pb.get("deliveries_per_s")
        if o.get("steps") is not None and od is None:
            od = 0  # measured, and not even the first step was sustained
        ratio = round(od / pd, 2) if od is not None and pd else None
        met = None if od is None or pd is None else od >= 1.5 * pd
        rows.append(_row(f"5. Fan-out at saturation, {int(n):,} subscribers: highest deliveries/s with p99 <= "
                         f"{P99_LIMIT_MS:g} ms, nothing lost (peer: sockjs-node; ours/peer {ratio})", od, pd,
                         ">= 1.5x sockjs-node", met))
        rows.append(_row(f"5. Fan-out {int(n):,} subscribers, each step offered: p99 / lost / server CPU per delivery",
                         _steps_text(o),
                         _steps_text(p), "n/a", None))
        if int(n) == 1000:
            o100, p100 = _step_at(o, 100_000), _step_at(p, 100_000)
            if o100 or p100:
                met100 = (None if o100.get("p99_ms") is None or p100.get("p99_ms") is None
                          else o100["p99_ms"] <= p100["p99_ms"] and not o100.get("lost"))
                rows.append(_row("5. Fan-out 1,000 subscribers at 100k deliveries/s: p99 ms / lost",
                                 _pair(o100.get("p99_ms"), o100.get("lost")), _pair(p100.get("p99_ms"), p100.get("lost")),
                                 "ours p99 <= sockjs-node's", met100))
        chart[f"ours fan-out {n} (del/s)"] = od
        chart[f"sockjs-node fan-out {n} (del/s)"] = pd
    notes = ("Each server gets the same stepped offered loads (subscribers x events/s) on the same open connections until "
             "a step misses; the peer's messages are padded to our measured message size; the node load clients share "
             "the 2 CPUs with the server, so a ceiling found is that of server and clients together.")
    return {"rows": rows, "chart": {"throughput": chart}, "notes": notes}


def _pair(a, b) -> str | None:
    if a is None and b is None:
        return None
    return f"{a} / {b}"


def connections(raw: dict) -> dict:
    ours, peer = raw.get("connections_ours") or {}, raw.get("connections_peer") or {}
    rows, chart = [], {}
    for n in sorted({*ours, *peer}, key=int):
        o, p = ours.get(n) or {}, peer.get(n) or {}
        ok, pk = o.get("kb_per_connection"), p.get("kb_per_connection")
        held_ok = o.get("held") == int(n) if o else None
        met = None if ok is None else (ok <= 15 and (pk is None or ok < pk) and bool(held_ok))
        rows.append(_row(f"6. {int(n):,} idle websocket connections: KB each (held {o.get('held')}; peer held "
                         f"{p.get('held')})", ok, pk, "<= 15 KB and below sockjs-node", met))
        chart[f"ours {n} conns"] = ok
        chart[f"sockjs-node {n} conns"] = pk
    notes = (f"Per-process open-file limit in this run: {raw.get('fd_limit')}; the largest size is that limit minus "
             "headroom for the server's other descriptors.") if raw.get("fd_limit") else None
    return {"rows": rows, "chart": {"memory": chart}, "notes": notes}


def resume(raw: dict) -> dict:
    r = raw.get("resume") or {}
    s = r.get("seconds")
    met = None if not r else (s is not None and s < 1 and r.get("in_order"))
    rows = [_row(f"7. Resume after missing {r.get('missed', 10000):,} events (s; in order: {r.get('in_order')})",
                 s, None, "< 1 s, all, in order", met)]
    return {"rows": rows, "measured": r}


def faults(raw: dict) -> dict:
    rows = []
    kill, seed = raw.get("relay_kill") or {}, raw.get("seed_kill") or {}
    if kill or seed:
        rows.append(_row("Publisher kill -9 mid-stream: committed rows never delivered "
                         f"(ours of {kill.get('committed')}; seed of {seed.get('committed')})",
                         kill.get("lost"), seed.get("lost"), "0 lost", None if not kill else kill.get("lost") == 0))
    ours_race, poll_race = raw.get("ours_race") or {}, raw.get("polling_race") or {}
    if ours_race or poll_race:
        rows.append(_row("Out-of-order commit race: committed rows skipped "
                         f"(ours of {ours_race.get('committed')}; id>last_seen poller of {poll_race.get('committed')})",
                         ours_race.get("skipped"), poll_race.get("skipped"), "0 skipped",
                         None if not ours_race else ours_race.get("skipped") == 0))
    return {"rows": rows, "relay_kill": kill, "seed_kill": seed, "ours_race": ours_race, "polling_race": poll_race}


def scaleout(raw: dict) -> dict:
    runs = raw.get("scaleout") or {}
    rows = []
    for k in sorted(runs, key=int):
        r = runs[k]
        spread = "/".join(str(v) for v in (r.get("per_server") or {}).values())
        rows.append(_row(f"8. Fan-out through HAProxy, {k} sync server(s), {r.get('subscribers', 0):,} websocket "
                         f"subscribers (deliveries/s; connections per server {spread})",
                         r.get("deliveries_per_s"), None, "0 lost", None if not r else r.get("lost") == 0))
        rows.append(_row(f"8. Through HAProxy, {k} sync server(s): p99 ms / lost (connected {r.get('connected')},"
                         f" failed {r.get('failed')})", _pair(r.get("p99_ms"), r.get("lost")), None, "n/a", None))
        idle = r.get("idle") or {}
        if idle:
            rows.append(_row(f"8. Through HAProxy, {k} sync server(s): idle websocket connections held of "
                             f"{idle.get('requested'):,} (sync servers' KB each; HAProxy's "
                             f"{idle.get('balancer_kb_per_connection')} KB each)",
                             _pair(idle.get("held"), idle.get("kb_per_connection")), None,
                             "all held", idle.get("held") == idle.get("requested")))
    notes = ("Every size on the same 2 CPUs with the balancer, the relay, PostgreSQL and the load clients: more "
             "servers add processes, not cores; the figure shows the balanced topology loses nothing, not "
             "how it scales across machines.") if runs else None
    return {"rows": rows, "notes": notes}


def build(raw: dict, quick: bool = False) -> dict:
    figs = {
        "capture": capture(raw), "writer_overhead": writer_overhead(raw), "api": api(raw), "relay_drain": relay_drain(raw),
        "latency": latency(raw),
        "throughput": throughput(raw), "fanout": fanout(raw), "connections": connections(raw),
        "resume": resume(raw), "faults": faults(raw), "scaleout": scaleout(raw),
    }
    if quick:
        for f in figs.values():
            f["notes"] = ((f.get("notes") or "") + " Quick mode: reduced sizes; not comparable to targets.").strip()
    return figs
