// Node smoke test of portal/static/sync/syncclient.js with a fake SockJS and fetch:
// resume since, duplicate dropping, transaction grouping (recovered and multi-transaction
// live messages), resync -> setPosition, status.
globalThis.window = { addEventListener() {}, removeEventListener() {} };
globalThis.navigator = { onLine: true };
const sent = [];
let sock;
globalThis.SockJS = class { constructor(url) { sock = this; this.readyState = 1; this.url = url; setTimeout(() => this.onopen(), 0); }
  send(t) { sent.push(JSON.parse(t)); } close() { this.readyState = 3; setTimeout(() => this.onclose && this.onclose(), 0); } };
globalThis.fetch = async () => ({ ok: true, json: async () => ({ token: "tok", url: "http://x/sync" }) });
const { SyncClient } = await import(new URL("../../portal/static/sync/syncclient.js", import.meta.url));
const c = new SyncClient({ topics: () => ["t"], heartbeatTimeout: 100000 });
const statuses = [], applied = [];
c.onStatus((s) => statuses.push(s));
c.subscribe("t", { since: 2, onEvents: (ev) => applied.push(ev.map((e) => e.tpos)), onResync: () => c.setPosition("t", 10) });
c.start();
await new Promise((r) => setTimeout(r, 20));
const msg = (m) => sock.onmessage({ data: JSON.stringify(m) });
msg({ type: "authed", user: "a" });
msg({ type: "recovered", topic: "t", events: [{ tpos: 2, tx_last: true }, { tpos: 3 }, { tpos: 4, tx_last: true }, { tpos: 5, tx_last: true }] });
// A live message of a busy topic: several whole transactions, each handed over alone.
msg({ type: "events", topic: "t", events: [{ tpos: 5, tx_last: true }, { tpos: 6, tx_last: true }, { tpos: 7 }, { tpos: 8, tx_last: true }] });
msg({ type: "resync", topic: "t", tpos: 9 });
const ok = JSON.stringify(sent) === JSON.stringify([{ type: "auth", token: "tok" }, { type: "subscribe", topic: "t", since: 2 }, { type: "subscribe", topic: "t", since: 10 }])
  && JSON.stringify(applied) === JSON.stringify([[3, 4], [5], [6], [7, 8]]) && statuses.join() === "connecting,live";
console.log(ok ? "OK" : "FAIL", JSON.stringify({ sent, applied, statuses }));
c.stop();
