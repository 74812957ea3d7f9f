// What the live checklist page knows, as pure logic (no DOM, no network), so it can be
// tested on its own (tests/portal/test_ui_state.py runs it under node).
//
// Events are applied idempotently by version: per row id we keep the newest version
// seen, and an event whose version is not newer changes nothing. Versions outlive
// deletes (tombstones), so a late update of a deleted item cannot bring it back.

/** "user:<id>…" -> user id, else null. */
export function actorUserId(actor) {
  const m = /^user:(\d+)/.exec(actor || "");
  return m ? Number(m[1]) : null;
}

export class ChecklistState {
  constructor(checklistId, { checklistVersion = 0 } = {}) {
    this.checklistId = Number(checklistId);
    this.items = new Map();
    this.versions = new Map();
    this.memberVersions = new Map();
    this.checklistVersion = Number(checklistVersion) || 0;
    this.title = null;
    this.deleted = false;
  }

  /** Apply one item row (event data or a JSON answer); true if it was newer. */
  applyItem(data, op) {
    const id = Number(data.id);
    const version = Number(data.version);
    if (this.versions.has(id) && version <= this.versions.get(id)) return false;
    this.versions.set(id, version);
    // An item moved to another checklist arrives as a delete here; an insert or update
    // naming another checklist also means it left this one.
    if (op === "delete" || Number(data.checklist_id) !== this.checklistId) {
      this.items.delete(id);
    } else {
      this.items.set(id, {
        id,
        checklist_id: this.checklistId,
        text: String(data.text),
        done: Boolean(data.done),
        position: Number(data.position),
        version,
      });
    }
    return true;
  }

  /** Items in display order: by position, ties by id. */
  ordered() {
    return [...this.items.values()].sort((a, b) => a.position - b.position || a.id - b.id);
  }

  /**
   * Apply the events of one transaction. Returns what the page must do:
   * { changedItems: [{id, event}], title: str|null, deleted: bool, members: [event] }.
   */
  applyEvents(events) {
    const out = { changedItems: [], title: null, deleted: false, members: [] };
    for (const ev of events) {
      const version = Number(ev.version ?? (ev.data && ev.data.version));
      if (ev.entity === "item") {
        if (this.applyItem(ev.data, ev.op) && ev.op !== "delete" && Number(ev.data.checklist_id) === this.checklistId) {
          out.changedItems.push({ id: Number(ev.data.id), event: ev });
        }
      } else if (ev.entity === "checklist") {
        if (version <= this.checklistVersion) continue;
        this.checklistVersion = version;
        if (ev.op === "delete") {
          this.deleted = true;
          out.deleted = true;
        } else if (ev.data && typeof ev.data.title === "string") {
          this.title = ev.data.title;
          out.title = ev.data.title;
        }
      } else if (ev.entity === "membership") {
        const mid = Number(ev.data.id);
        if (this.memberVersions.has(mid) && version <= this.memberVersions.get(mid)) continue;
        this.memberVersions.set(mid, version);
        out.members.push(ev);
      }
    }
    return out;
  }

  /** Replace everything with a REST snapshot (GET /api/checklists/<id>/). */
  replace(snapshot) {
    this.items.clear();
    for (const raw of snapshot.items || []) {
      const d = { ...raw, checklist_id: this.checklistId };
      // The snapshot is authoritative: its versions replace ours (other ids' tombstones stay).
      this.versions.delete(Number(d.id));
      this.applyItem(d, "insert");
    }
    if (typeof snapshot.title === "string") this.title = snapshot.title;
    if (snapshot.version !== undefined) this.checklistVersion = Number(snapshot.version);
  }
}
