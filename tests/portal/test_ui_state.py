"""The live page's state logic (portal/static/checklists/state.js), run under node:
idempotent by version, position order, items leaving the list, checklist and
membership events, REST snapshots."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

STATE_JS = Path(__file__).resolve().parents[2] / "portal" / "static" / "checklists" / "state.js"

PRELUDE = f"""
import assert from "node:assert/strict";
import {{ ChecklistState, actorUserId }} from "{STATE_JS.as_uri()}";
const item = (id, version, extra = {{}}) => ({{ id, checklist_id: 7, text: `t${{id}}`, done: false, position: id, version, ...extra }});
const ev = (entity, op, data, extra = {{}}) => ({{ entity, op, data, version: data.version, actor: "user:2", source: "ui", ...extra }});
const texts = (s) => s.ordered().map((d) => d.text);
"""


def run_js(body: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    proc = subprocess.run(
        [node, "--input-type=module", "-e", PRELUDE + body], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr


def test_duplicates_and_older_versions_change_nothing():
    run_js("""
    const s = new ChecklistState(7);
    assert.equal(s.applyItem(item(1, 1), "insert"), true);
    assert.equal(s.applyItem(item(1, 3, { text: "v3" }), "update"), true);
    // The same event again, and an older one arriving late: ignored.
    assert.equal(s.applyItem(item(1, 3, { text: "v3 again" }), "update"), false);
    assert.equal(s.applyItem(item(1, 2, { text: "v2" }), "update"), false);
    assert.deepEqual(texts(s), ["v3"]);
    """)


def test_delete_leaves_a_tombstone():
    run_js("""
    const s = new ChecklistState(7);
    s.applyItem(item(1, 1), "insert");
    assert.equal(s.applyItem(item(1, 2), "delete"), true);
    assert.deepEqual(texts(s), []);
    // A late update (older version) cannot resurrect the deleted item.
    assert.equal(s.applyItem(item(1, 2, { text: "ghost" }), "update"), false);
    assert.deepEqual(texts(s), []);
    """)


def test_position_order_and_items_moving_to_another_list():
    run_js("""
    const s = new ChecklistState(7);
    s.applyEvents([ev("item", "insert", item(1, 1, { position: 2 })), ev("item", "insert", item(2, 1, { position: 0 })),
                   ev("item", "insert", item(3, 1, { position: 2 }))]);
    assert.deepEqual(texts(s), ["t2", "t1", "t3"]);  // ties broken by id
    s.applyEvents([ev("item", "update", item(3, 2, { position: -1 }))]);
    assert.deepEqual(texts(s), ["t3", "t2", "t1"]);
    // Moved to checklist 8: gone from this one.
    const out = s.applyEvents([ev("item", "update", item(2, 2, { checklist_id: 8 }))]);
    assert.deepEqual(texts(s), ["t3", "t1"]);
    assert.deepEqual(out.changedItems, []);
    """)


def test_events_report_what_changed_and_by_whom():
    run_js("""
    const s = new ChecklistState(7, { checklistVersion: 1 });
    const out = s.applyEvents([
      ev("item", "insert", item(5, 1), { actor: "user:3:token:9" }),
      ev("checklist", "update", { id: 7, title: "New title", version: 2 }),
      ev("membership", "update", { id: 4, checklist_id: 7, user_id: 3, role: "viewer", version: 2 }),
    ]);
    assert.deepEqual(out.changedItems.map((c) => c.id), [5]);
    assert.equal(actorUserId(out.changedItems[0].event.actor), 3);
    assert.equal(actorUserId(null), null);
    assert.equal(actorUserId("os:root:shell"), null);
    assert.equal(out.title, "New title");
    assert.equal(out.members.length, 1);
    // Replayed: nothing is reported twice.
    const again = s.applyEvents([
      ev("checklist", "update", { id: 7, title: "New title", version: 2 }),
      ev("membership", "update", { id: 4, checklist_id: 7, user_id: 3, role: "viewer", version: 2 }),
    ]);
    assert.equal(again.title, null);
    assert.deepEqual(again.members, []);
    const gone = s.applyEvents([ev("checklist", "delete", { id: 7, title: "New title", version: 3 })]);
    assert.equal(gone.deleted, true);
    assert.equal(s.deleted, true);
    """)


def test_rest_snapshot_replaces_state():
    run_js("""
    const s = new ChecklistState(7);
    s.applyItem(item(1, 5), "insert");
    s.applyItem(item(2, 1), "insert");
    s.applyItem(item(3, 2), "delete");
    // The REST shape names the list "checklist", not "checklist_id".
    s.replace({ title: "Snap", version: 9, items: [{ id: 1, checklist: 7, text: "one", done: true, position: 0, version: 6 }],
                tpos: 40 });
    assert.deepEqual(texts(s), ["one"]);
    assert.equal(s.title, "Snap");
    assert.equal(s.checklistVersion, 9);
    // Events after the snapshot continue by version.
    assert.equal(s.applyItem(item(1, 6), "update"), false);
    assert.equal(s.applyItem(item(1, 7, { text: "seven" }), "update"), true);
    assert.deepEqual(texts(s), ["seven"]);
    """)


def test_the_suite_can_fail():
    # Guards against a harness that passes whatever the script does.
    with pytest.raises(AssertionError):
        run_js("assert.equal(1, 2);")
