// Node test of portal/static/sync/syncclient.js (fake SockJS and fetch): what it does
// about authority. Each scenario prints "ok <name>" or "FAIL <name> <details>".
//  - gap: an event above last+1 is never applied past; the client resumes since last.
//  - renew: before the token expires, a fresh one is sent over the open connection.
//  - reuse: a reconnect while the token is valid authenticates with that token.
//  - refused: the token endpoint refusing a topic (403) ends that topic (onRevoked).
//  - backoff: repeated resyncs of one topic are retried with growing delays.
globalThis.window = { addEventListener() {}, removeEventListener() {} };
globalThis.navigator = { onLine: true };
const { SyncClient } = await import(new URL("../../portal/static/sync/syncclient.js", import.meta.url));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const results = [];
const check = (name, ok, details) => results.push(ok ? `ok ${name}` : `FAIL ${name} ${JSON.stringify(details)}`);

function harness({ tokenFn } = {}) {
  const h = { socks: [], sent: [], fetches: [], tokenN: 0 };
  globalThis.SockJS = class {
    constructor(url) { this.readyState = 1; this.url = url; h.socks.push(this); setTimeout(() => this.onopen(), 0); }
    send(t) { h.sent.push({ sock: h.socks.indexOf(this), ...JSON.parse(t) }); }
    close() { this.readyState = 3; setTimeout(() => this.onclose && this.onclose(), 0); }
  };
  globalThis.fetch = async (url, opts) => {
    const topics = JSON.parse(opts.body).topics;
    h.fetches.push(topics);
    if (tokenFn) return tokenFn(topics, h);
    h.tokenN += 1;
    return { ok: true, status: 200, json: async () => ({ token: `tok${h.tokenN}`, url: "http://x/sync", topics }) };
  };
  h.msg = (m, i = h.socks.length - 1) => h.socks[i].onmessage({ data: JSON.stringify(m) });
  return h;
}

// -- gap --------------------------------------------------------------------------------
{
  const h = harness();
  const applied = [];
  const c = new SyncClient({ topics: () => ["t"], heartbeatTimeout: 1e6 });
  c.subscribe("t", { since: 0, onEvents: (ev) => applied.push(ev.map((e) => e.tpos)) });
  c.start();
  await sleep(20);
  h.msg({ type: "authed", user: "a", expires_in: 300 });
  h.msg({ type: "subscribed", topic: "t", tpos: 0 });
  h.msg({ type: "events", topic: "t", events: [{ tpos: 1, tx_last: true }] });
  h.msg({ type: "events", topic: "t", events: [{ tpos: 3, tx_last: true }] });   // 2 is missing
  h.msg({ type: "events", topic: "t", events: [{ tpos: 4, tx_last: true }] });   // still behind the gap
  const resumes = h.sent.filter((m) => m.type === "subscribe").map((m) => m.since);
  h.msg({ type: "recovered", topic: "t", events: [{ tpos: 2, tx_last: true }, { tpos: 3, tx_last: true }, { tpos: 4, tx_last: true }] });
  h.msg({ type: "subscribed", topic: "t", tpos: 4 });
  h.msg({ type: "events", topic: "t", events: [{ tpos: 5, tx_last: true }] });
  check("gap", JSON.stringify(resumes) === "[0,1]" && JSON.stringify(applied) === "[[1],[2],[3],[4],[5]]",
        { resumes, applied });
  c.stop();
}

// -- renew ------------------------------------------------------------------------------
{
  const h = harness();
  const c = new SyncClient({ topics: () => ["t"], heartbeatTimeout: 1e6 });
  c.subscribe("t", { since: 0 });
  c.start();
  await sleep(20);
  h.msg({ type: "authed", user: "a", expires_in: 0.3, expires_at: Date.now() / 1000 + 0.3 });
  await sleep(280);
  const auths = h.sent.filter((m) => m.type === "auth");
  check("renew", h.socks.length === 1 && auths.length === 2 && auths[1].token === "tok2" && auths[1].sock === 0
        && h.sent.filter((m) => m.type === "subscribe").length === 1, { socks: h.socks.length, sent: h.sent });
  c.stop();
}

// -- reuse ------------------------------------------------------------------------------
{
  const h = harness();
  const c = new SyncClient({ topics: () => ["t"], heartbeatTimeout: 1e6, minDelay: 1 });
  c.subscribe("t", { since: 0 });
  c.start();
  await sleep(20);
  h.msg({ type: "authed", user: "a", expires_in: 300 });
  h.socks[0].close();
  await sleep(30);
  const auths = h.sent.filter((m) => m.type === "auth");
  check("reuse", h.socks.length === 2 && h.fetches.length === 1 && auths.length === 2 && auths[1].token === "tok1"
        && auths[1].sock === 1, { fetches: h.fetches, sent: h.sent });
  c.stop();
}

// -- refused ----------------------------------------------------------------------------
{
  const h = harness({
    tokenFn: (topics, hh) => {
      if (topics.includes("gone")) return { ok: false, status: 403, json: async () => ({ detail: "no" }) };
      hh.tokenN += 1;
      return { ok: true, status: 200, json: async () => ({ token: `tok${hh.tokenN}`, url: "http://x/sync", topics }) };
    },
  });
  const revoked = [];
  const c = new SyncClient({ topics: () => ["t", "gone"], heartbeatTimeout: 1e6 });
  c.subscribe("t", { since: 0, onRevoked: () => revoked.push("t") });
  c.subscribe("gone", { since: 0, onRevoked: () => revoked.push("gone") });
  c.start();
  await sleep(30);
  const subs = h.sent.filter((m) => m.type === "subscribe").map((m) => m.topic);
  check("refused", JSON.stringify(revoked) === '["gone"]' && h.socks.length === 1
        && JSON.stringify(subs) === '["t"]', { revoked, subs, fetches: h.fetches });
  c.stop();
}

// -- backoff ----------------------------------------------------------------------------
{
  const h = harness();
  const c = new SyncClient({ topics: () => ["t"], heartbeatTimeout: 1e6, minDelay: 40 });
  c.subscribe("t", { since: 0, onResync: () => c.setPosition("t", 5) });
  c.start();
  await sleep(20);
  h.msg({ type: "authed", user: "a", expires_in: 300 });
  const times = [];
  const t0 = Date.now();
  for (let i = 0; i < 4; i++) {
    const before = h.sent.filter((m) => m.type === "subscribe").length;
    h.msg({ type: "resync", topic: "t", tpos: 5 });
    while (h.sent.filter((m) => m.type === "subscribe").length === before && Date.now() - t0 < 3000) await sleep(2);
    times.push(Date.now() - t0);
  }
  const gaps = times.map((t, i) => t - (i ? times[i - 1] : 0));
  // The first retry is immediate; then at least 20, 40, 80 ms (minDelay doubling, -50% jitter).
  check("backoff", gaps[1] >= 18 && gaps[2] >= 38 && gaps[3] >= 78, { gaps });
  h.msg({ type: "subscribed", topic: "t", tpos: 5 });
  c.stop();
}

console.log(results.join("\n"));
