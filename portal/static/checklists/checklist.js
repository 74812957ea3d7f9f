// The live checklist page.
//
// The server renders the page with the state it read and the topic position (data-tpos)
// that state reflects; this script subscribes to checklist:<id> since that position and
// applies every event idempotently by version, so a duplicate or an older event never
// changes what is shown. The page's forms are submitted with fetch; their JSON answers
// carry the changed rows with their new versions, so this window shows its own change at
// once and ignores the live echo of it. Without this script the forms still work.

import { ChecklistState, actorUserId } from "./state.js";

const LIVE_STATUSES = { live: "live", connecting: "reconnecting", reconnecting: "reconnecting", offline: "offline" };
const HIGHLIGHT_MS = 4000;

const page = document.getElementById("checklist-page");
if (page) {
  init(page);
}

function init(page) {
  const checklistId = Number(page.dataset.checklistId);
  const topic = `checklist:${checklistId}`;
  const me = { id: Number(page.dataset.userId), username: page.dataset.username };
  const itemBase = page.dataset.itemUrl; // /checklists/<id>/items/
  const list = document.getElementById("items");
  const template = document.getElementById("item-template");
  const statusEl = document.getElementById("sync-status");
  const titleEl = document.getElementById("checklist-title");
  const flashEl = document.getElementById("flash");
  const itemsEmpty = document.getElementById("items-empty");

  let role = page.dataset.role;
  let ended = null; // null, "revoked" or "deleted": the page stops editing for good
  let client = null;

  const state = new ChecklistState(checklistId, { checklistVersion: page.dataset.checklistVersion });
  // id -> its <li>, kept in step with the DOM by render() (see rendering below).
  const lis = new Map();
  for (const li of list.querySelectorAll("li[data-item-id]")) {
    const id = Number(li.dataset.itemId);
    state.applyItem({
      id,
      checklist_id: checklistId,
      text: li.querySelector(".item-text").textContent,
      done: li.querySelector(".item-done").checked,
      position: Number(li.dataset.position),
      version: Number(li.dataset.version),
    }, "insert");
    li._shown = { ...state.items.get(id) };
    lis.set(id, li);
  }
  for (const li of document.querySelectorAll("#members li[data-membership-id]")) {
    state.memberVersions.set(Number(li.dataset.membershipId), Number(li.dataset.version));
  }

  // --- rendering ---------------------------------------------------------------
  //
  // Every change to the list's <li>s goes through render(), so `lis` (id -> its <li>)
  // stays in step with the DOM. Under a stream of changes render() runs for every message:
  // it looks items up in the map rather than with a selector query per item, and writes
  // only what differs (every DOM write invalidates style; at 1,000 changes a second the
  // writes, not the script, were most of the page's time).

  function liFor(id) {
    return lis.get(Number(id)) || null;
  }

  function newLi() {
    const li = template.content.firstElementChild.cloneNode(true);
    if (!canEdit()) makeReadOnly(li);
    return li;
  }

  // An item's elements, found once per <li>.
  function parts(li) {
    if (!li._parts) {
      li._parts = {
        text: li.querySelector(".item-text"),
        box: li.querySelector(".item-done"),
        input: li.querySelector(".item-edit input[name=text]"),
        editor: li.querySelector(".item-edit"),
        tag: li.querySelector(".item-changed"),
      };
    }
    return li._parts;
  }

  // Show item d in li, touching only what differs from what it shows (li._shown: the
  // item as last filled in). Also puts back what the user changed in a control whose
  // save failed (the checkbox flips before the answer), so those are read from the DOM.
  function fill(li, d) {
    const shown = li._shown || {};
    const { text, box, input, editor } = parts(li);
    if (shown.id !== d.id) {
      li.dataset.itemId = String(d.id);
      for (const form of li.querySelectorAll("form[data-action]")) {
        form.action = `${itemBase}${d.id}/${form.dataset.action}/`;
      }
    }
    if (shown.version !== d.version) li.dataset.version = String(d.version);
    if (shown.position !== d.position) li.dataset.position = String(d.position);
    if (shown.done !== d.done) li.classList.toggle("is-done", d.done);
    if (shown.text !== d.text) text.textContent = d.text;
    if (box.checked !== d.done) box.checked = d.done;
    li._shown = { ...d };
    // The editor's field follows only while the editor is open (it is set on opening).
    if (input && editor.open) syncEditor(input, d.text);
  }

  // Never overwrite what the user is typing.
  function syncEditor(input, text) {
    if (document.activeElement !== input && input.value !== text) input.value = text;
  }

  // The <li> an element is in, and its item as known; null outside an item.
  function itemOf(el) {
    const li = el.closest("li[data-item-id]");
    const d = li && state.items.get(Number(li.dataset.itemId));
    return d ? { li, d } : null;
  }

  // "toggle" does not bubble: listen in the capture phase.
  list.addEventListener("toggle", (e) => {
    const details = e.target;
    if (!details.open || !details.matches(".item-edit")) return;
    const item = itemOf(details);
    const input = item && parts(item.li).input;
    if (input) syncEditor(input, item.d.text);
  }, true);

  function render() {
    const wanted = state.ordered();
    if (lis.size > wanted.length || wanted.some((d) => !lis.has(d.id))) {
      const keep = new Set(wanted.map((d) => d.id));
      for (const [id, li] of lis) {
        if (!keep.has(id)) {
          li.remove();
          lis.delete(id);
        }
      }
    }
    wanted.forEach((d, index) => {
      let li = lis.get(d.id);
      if (!li) {
        li = newLi();
        lis.set(d.id, li);
      }
      if (!li._shown || li._shown.version !== d.version) fill(li, d);
      // Move only when out of place: re-inserting a node would close its open editor.
      if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
    });
    const empty = wanted.length === 0;
    if (itemsEmpty.hidden === empty) itemsEmpty.hidden = !empty;
  }

  // A save of this form's item failed: show the item as saved again.
  function restoreItem(form) {
    const item = itemOf(form);
    if (item) fill(item.li, item.d);
  }

  // "changed by <who>" for HIGHLIGHT_MS after the latest change: one timer per item,
  // moved on by later changes rather than cleared and set again for each.
  function highlight(id, who) {
    const li = liFor(id);
    if (!li) return;
    const { tag } = parts(li);
    const said = `changed by ${who}`;
    if (tag.textContent !== said) tag.textContent = said;
    if (tag.hidden) tag.hidden = false;
    if (!li.classList.contains("flash")) li.classList.add("flash");
    li._highlightUntil = performance.now() + HIGHLIGHT_MS;
    if (!li._highlightTimer) li._highlightTimer = setTimeout(() => unhighlight(li, tag), HIGHLIGHT_MS);
  }

  function unhighlight(li, tag) {
    const left = li._highlightUntil - performance.now();
    if (left > 0) {
      li._highlightTimer = setTimeout(() => unhighlight(li, tag), left);
      return;
    }
    li._highlightTimer = null;
    li.classList.remove("flash");
    tag.hidden = true;
  }

  function setStatus(status) {
    const shown = LIVE_STATUSES[status] || "offline";
    statusEl.textContent = shown;
    statusEl.dataset.status = shown;
  }

  function flash(message, kind = "warning") {
    flashEl.textContent = message;
    flashEl.className = `banner ${kind}`;
    flashEl.hidden = false;
    clearTimeout(flashEl._timer);
    flashEl._timer = setTimeout(() => { flashEl.hidden = true; }, 6000);
  }

  function setTitle(title) {
    titleEl.textContent = title;
    document.title = `${title} · Cloud Checklist`;
    const input = document.querySelector("#rename-form input[name=title]");
    if (input && document.activeElement !== input) input.value = title;
  }

  function canEdit() {
    return !ended && (role === "owner" || role === "editor");
  }

  function makeReadOnly(root) {
    for (const el of root.querySelectorAll("input, button, select")) el.disabled = true;
  }

  function stopEditing() {
    page.classList.add("readonly");
    makeReadOnly(page);
  }

  // --- who changed it ----------------------------------------------------------

  function whoDid(event) {
    const uid = actorUserId(event.actor);
    if (uid !== null) {
      const member = document.querySelector(`#members li[data-user-id="${uid}"]`);
      if (member) return member.dataset.username;
      return `user ${uid}`;
    }
    return event.source || "someone";
  }

  function byMe(event) {
    return actorUserId(event.actor) === me.id;
  }

  // --- live events -------------------------------------------------------------

  function onEvents(events) {
    const out = state.applyEvents(events);
    render();
    for (const { id, event } of out.changedItems) {
      if (!byMe(event)) highlight(id, whoDid(event));
    }
    if (out.title !== null) setTitle(out.title);
    if (out.deleted) markEnded("deleted");
    for (const ev of out.members) {
      if (Number(ev.data.user_id) === me.id && ev.op !== "delete" && ev.data.role !== role) myRoleChanged(ev.data.role);
    }
    if (out.members.length) reloadMembers();
  }

  function myRoleChanged(newRole) {
    const couldEdit = canEdit();
    role = newRole;
    if (couldEdit && !canEdit()) {
      stopEditing();
      flash(`Your role changed to ${newRole}: this page is now read only.`);
    } else if (!couldEdit && canEdit()) {
      flash(`Your role changed to ${newRole}. Reload the page to edit.`, "warning");
    }
  }

  async function reloadMembers() {
    const panel = document.getElementById("members");
    try {
      const resp = await fetch(page.dataset.membersUrl, { credentials: "same-origin" });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const html = await resp.text();
      const holder = document.createElement("div");
      holder.innerHTML = html.trim();
      const fresh = holder.querySelector("#members");
      if (fresh && !ended) panel.replaceWith(fresh);
    } catch (err) {
      // Could not refresh (e.g. access just ended): say the panel is out of date.
      const note = panel.querySelector(".stale-note");
      if (note) note.hidden = false;
    }
  }

  function markEnded(reason) {
    if (ended === "deleted") return; // the strongest explanation wins
    ended = reason;
    if (reason === "deleted") {
      document.getElementById("revoked-banner").hidden = true;
      document.getElementById("deleted-banner").hidden = false;
    } else {
      document.getElementById("revoked-banner").hidden = false;
    }
    stopEditing();
  }

  // Who has this list open, from the sync server (any server: presence is shared through
  // the database). The whole list comes each time; the page renders it as given.
  const presenceEl = document.getElementById("presence");
  const presenceList = document.getElementById("presence-list");
  function onPresence(users) {
    if (!presenceEl) return;
    presenceList.replaceChildren(...users.map((u) => {
      const li = document.createElement("li");
      li.dataset.userId = String(u.user_id);
      li.dataset.username = u.name;
      li.dataset.tabs = String(u.tabs);
      const since = new Date(u.since);
      const name = document.createElement("span");
      name.className = "presence-name";
      name.textContent = u.user_id === me.id ? `${u.name} (you)` : u.name;
      const detail = document.createElement("span");
      detail.className = "muted";
      const time = Number.isNaN(since.getTime()) ? "" : since.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      detail.textContent = ` since ${time}${u.tabs > 1 ? ` · ${u.tabs} tabs` : ""}`;
      li.append(name, detail);
      return li;
    }));
    presenceEl.hidden = users.length === 0;
  }

  function onRevoked() {
    onPresence([]);
    markEnded("revoked");
    if (client) client.stop();
    setStatus("offline");
  }

  async function onResync() {
    // The server cannot replay what we missed: reload the whole state over REST and
    // continue the stream from the position that state reflects.
    for (let attempt = 0; ; attempt++) {
      try {
        const resp = await fetch(page.dataset.apiUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (resp.status === 403 || resp.status === 404) {
          onRevoked();
          return;
        }
        if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
        const body = await resp.json();
        replaceState(body);
        client.setPosition(topic, Number(body.tpos) || 0);
        return;
      } catch (err) {
        console.warn("resync failed, retrying", err);
        await new Promise((r) => setTimeout(r, Math.min(30000, 500 * 2 ** attempt)));
      }
    }
  }

  function replaceState(body) {
    state.replace(body);
    if (state.title !== null) setTitle(state.title);
    render();
    reloadMembers();
  }

  // --- forms -------------------------------------------------------------------

  function applyAnswer(body) {
    if (body.item) state.applyItem(body.item, "update");
    for (const d of body.items || []) state.applyItem(d, "update");
    if (body.deleted && body.deleted.id !== undefined) state.applyItem(body.deleted, "delete");
    if (typeof body.title === "string") setTitle(body.title);
    render();
  }

  async function send(form, submitter) {
    const data = new FormData(form);
    if (submitter && submitter.name) data.set(submitter.name, submitter.value);
    return post(form.action, data);
  }

  async function post(url, data) {
    let resp;
    try {
      resp = await fetch(url, {
        method: "POST",
        body: data,
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": page.dataset.csrfToken },
      });
    } catch (err) {
      flash("Could not reach the server. Check your connection and try again.");
      return null;
    }
    if (resp.status === 403) {
      flash("You are not allowed to change this checklist.");
      return null;
    }
    if (resp.status === 404) {
      flash("That no longer exists, or you lost access to this checklist.");
      return null;
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (err) {
      body = null;
    }
    if (!resp.ok || !body || !body.ok) {
      flash((body && body.error) || `The server refused the change (HTTP ${resp.status}).`);
      return null;
    }
    return body;
  }

  page.addEventListener("submit", async (e) => {
    const form = e.target;
    const action = form.dataset.action;
    if (!action) return; // e.g. "delete checklist": a plain POST that leaves the page
    e.preventDefault();
    if (ended) return;
    const buttons = [...form.querySelectorAll("button")];
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const body = await send(form, e.submitter);
      if (["share", "role", "remove"].includes(action)) {
        if (body && action === "share") form.reset();
        reloadMembers();
        return;
      }
      if (!body) {
        restoreItem(form); // undo what the control shows (e.g. a checkbox) back to the known state
        return;
      }
      applyAnswer(body);
      if (action === "add") {
        form.reset();
        form.querySelector("input[name=text]").focus();
      }
      if (action === "edit") form.closest("details").open = false;
    } finally {
      if (!ended) buttons.forEach((b) => { b.disabled = false; });
    }
  });

  page.addEventListener("change", (e) => {
    const target = e.target;
    if (target.matches(".item-done") || target.matches(".member-role-form select")) {
      target.form.requestSubmit();
    }
  });

  // --- drag and drop reorder (writes `position` through the move endpoint) -----

  let dragged = null;
  list.addEventListener("pointerdown", (e) => {
    const handle = e.target.closest(".drag-handle");
    if (handle && canEdit()) handle.closest("li").draggable = true;
  });
  list.addEventListener("dragstart", (e) => {
    dragged = e.target.closest("li[data-item-id]");
    if (!dragged) return;
    dragged.classList.add("dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", dragged.dataset.itemId);
  });
  function clearDropMarks() {
    for (const li of list.querySelectorAll(".drop-before, .drop-after")) li.classList.remove("drop-before", "drop-after");
  }
  function dropPlace(e) {
    const li = e.target.closest("li[data-item-id]");
    if (!li || !dragged || li === dragged) return null;
    const box = li.getBoundingClientRect();
    return { li, after: e.clientY > box.top + box.height / 2 };
  }
  list.addEventListener("dragover", (e) => {
    const place = dropPlace(e);
    if (!place) return;
    e.preventDefault();
    clearDropMarks();
    place.li.classList.add(place.after ? "drop-after" : "drop-before");
  });
  list.addEventListener("drop", async (e) => {
    const place = dropPlace(e);
    clearDropMarks();
    if (!place) return;
    e.preventDefault();
    const others = [...list.querySelectorAll("li[data-item-id]")].filter((li) => li !== dragged);
    const index = others.indexOf(place.li) + (place.after ? 1 : 0);
    const data = new FormData();
    data.set("index", String(index));
    const body = await post(`${itemBase}${dragged.dataset.itemId}/move/`, data);
    if (body) applyAnswer(body);
  });
  list.addEventListener("dragend", () => {
    if (dragged) {
      dragged.classList.remove("dragging");
      dragged.draggable = false;
    }
    dragged = null;
    clearDropMarks();
  });

  // --- connect -----------------------------------------------------------------

  setStatus("reconnecting");
  startSync().catch((err) => {
    console.error("live updates unavailable", err);
    setStatus("offline");
    statusEl.title = "Live updates are unavailable; reload the page to see changes.";
  });

  async function startSync() {
    if (typeof window.SockJS === "undefined") throw new Error("SockJS did not load");
    // Imported dynamically so that the forms above keep working if the sync client
    // cannot load.
    const { SyncClient } = await import(page.dataset.syncclientUrl);
    // ?transports=xhr-polling (comma-separated SockJS names) forces the transports, to
    // test or diagnose each one; by default SockJS picks the best that works.
    const params = new URLSearchParams(location.search);
    const forced = params.get("transports");
    // ?latency_sample_ms=N samples commit -> page latency every N ms (0: every live
    // transaction) instead of once a second (the bench measures a page with it; the
    // server still records at most its per-connection allowance).
    const sampleMs = params.has("latency_sample_ms") ? Number(params.get("latency_sample_ms")) : NaN;
    client = new SyncClient({
      sockjsUrl: page.dataset.syncUrl,
      tokenUrl: "/api/sync/token/",
      topics: () => [topic],
      transports: forced ? forced.split(",") : undefined,
      csrfToken: page.dataset.csrfToken,
      ...(sampleMs >= 0 ? { latencySampleMs: sampleMs, latencyBatch: 32, latencyFlushMs: 1000 } : {}),
    });
    client.onStatus((status) => {
      if (ended === "revoked") return;
      setStatus(status);
    });
    client.subscribe(topic, {
      since: Number(page.dataset.tpos) || 0,
      onEvents,
      onResync,
      onRevoked,
      onPresence,
    });
    client.start();
    window.addEventListener("pagehide", () => client.stop());
  }
}
