// Node test of the browser client's latency reports (portal/static/sync/syncclient.js) with
// a fake SockJS: live transactions are sampled (recovered ones never), measured by the
// server's clock from "authed" and heartbeats (here 5 s ahead of this one), batched into one message.
globalThis.window = { addEventListener() {}, removeEventListener() {} };
globalThis.navigator = { onLine: true };
const sent = [];
let sock;
globalThis.SockJS = class { constructor(url) { sock = this; this.readyState = 1; this.url = url; setTimeout(() => this.onopen(), 0); }
  send(t) { sent.push(JSON.parse(t)); } close() { this.readyState = 3; setTimeout(() => this.onclose && this.onclose(), 0); } };
globalThis.fetch = async () => ({ ok: true, json: async () => ({ token: "tok", url: "http://x/sync" }) });
const { SyncClient } = await import(new URL("../../portal/static/sync/syncclient.js", import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const c = new SyncClient({ topics: () => ["t"], heartbeatTimeout: 100000, latencySampleMs: 0, latencyBatch: 2 });
c.subscribe("t", { since: 0, onEvents: () => {} });
c.start();
await sleep(20);
const msg = (m) => sock.onmessage({ data: JSON.stringify(m) });
const SKEW = 5000; // the server's clock runs 5 s ahead of this one
const committed = (agoMs) => new Date(Date.now() + SKEW - agoMs).toISOString();
msg({ type: "events", topic: "t", events: [{ tpos: 1, tx_last: true, committed_at: committed(30) }] }); // before authed: no clock
// authed came 20 ms late (as through a browser's XHR handover); a heartbeat came at once:
// the client goes by the fastest.
msg({ type: "authed", user: "a", expires_in: 300, server_time: (Date.now() + SKEW - 20) / 1000 });
msg({ type: "heartbeat", pos: 1, time: (Date.now() + SKEW) / 1000 });
msg({ type: "heartbeat", pos: 1, time: (Date.now() + SKEW - 30) / 1000 });
msg({ type: "recovered", topic: "t", events: [{ tpos: 2, tx_last: true, committed_at: committed(60000) }] });
await sleep(3);
msg({ type: "events", topic: "t", events: [{ tpos: 3, tx_last: true, committed_at: committed(30) }] });
await sleep(3);
msg({ type: "events", topic: "t", events: [{ tpos: 4, tx_last: true, committed_at: committed(40) },
                                            { tpos: 5, tx_last: true, committed_at: "not a time" }] });
await sleep(3);
msg({ type: "events", topic: "t", events: [{ tpos: 6, tx_last: true, committed_at: "2000-01-01T00:00:00.000001Z" }] });
const reports = sent.filter((m) => m.type === "latency");
const [a, b] = (reports[0] || { samples: [] }).samples;
const ok = reports.length === 1 && reports[0].samples.length === 2 && a >= 29 && a < 45 && b >= 39 && b < 55
  && c.samples.length === 1 && c.samples[0] > 1e11; // the next batch waits for its timer or stop()
c.stop();
const last = sent.filter((m) => m.type === "latency");
console.log(ok && last.length === 2 ? "OK" : "FAIL", JSON.stringify({ reports: last }));
