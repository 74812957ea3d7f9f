// Browser client of the sync server (ES module). Wraps the global SockJS (sockjs-client,
// /static/vendor/sockjs.min.js) and adds what it lacks: tokens (renewed over the open
// connection before they expire, reused on a reconnect while valid), reconnect with
// exponential backoff + jitter, resume from the last tpos per topic, duplicate dropping,
// gap detection (an event above last+1 is never applied: the topic resumes from last),
// whole-transaction delivery and a dead-connection watchdog. It also reports what the user
// sees: commit -> applied-on-page latency of a sample of live transactions, a few samples
// per message, to the sync server's /metrics (sync_client_latency_seconds).
//
//   import { SyncClient } from "/static/sync/syncclient.js";
//   const c = new SyncClient({ sockjsUrl, tokenUrl: "/api/sync/token/", csrfToken,
//                              topics: () => ["checklist:1"] });
//   c.onStatus((s) => ...);                      // connecting | live | reconnecting | offline
//   c.subscribe("checklist:1", { since: restTpos, onEvents(events) {...},
//                                 async onResync() { reload(); c.setPosition(topic, tpos); },
//                                 onRevoked() {...},
//                                 onPresence(users) {...} });  // optional: appear in, and get, who is here
//                                                              // [{user_id, name, since, tabs}]
//   c.start();  ...  c.stop();

const HEARTBEAT_MS = 1000; // the server sends {"type":"heartbeat"} every second
const REUSE_MIN_MS = 2000; // a reconnect reuses the token if it is valid for longer than this
const RENEW_AHEAD_MS = 60000; // renew this long before expiry (half the lifetime if shorter)
// While showing presence the client pings: a server closes a presence connection that sent
// nothing for 6 s, so a tab whose network dropped leaves the others' lists within seconds.
// The ping answers the server's own messages (a heartbeat every second) rather than a timer:
// browsers throttle timers in background tabs to once a minute, but deliver messages.
const PRESENCE_PING_MS = 2000;
const LATENCY_MAX_BATCH = 32; // samples per report (the server refuses more)
// sockjs-client tries its transports in a fixed order, xhr-streaming before eventsource, and
// a `transports` list only filters it. But Chromium hands a streaming XHR's data to the page
// at most every 50 ms (its progress events, with which readystatechange fires, are
// throttled), so behind a proxy that refuses websockets a page saw each change about 25 ms
// late on average (make bench: commit->page p50 28 ms, against 3 ms on websocket). An
// EventSource delivers each message as it arrives: where the browser has one, xhr-streaming
// is left out and eventsource is the first fallback.
const WITHOUT_XHR_STREAMING = [
  "websocket", "xdr-streaming", "eventsource", "iframe-eventsource", "htmlfile",
  "iframe-htmlfile", "xhr-polling", "xdr-polling", "iframe-xhr-polling", "jsonp-polling",
];
export function defaultTransports(hasEventSource = typeof EventSource === "function") {
  return hasEventSource ? WITHOUT_XHR_STREAMING : undefined;
}

// The wall clock with sub-millisecond resolution where the browser gives it.
const wallNow = typeof performance !== "undefined" && performance.timeOrigin
  ? () => performance.timeOrigin + performance.now() : () => Date.now();

// An event's committed_at ("2026-01-02T03:04:05.123456Z") in ms since the epoch, with the
// microseconds Date.parse drops; NaN if it is not a time.
export function commitTimeMs(text) {
  if (typeof text !== "string") return NaN;
  const ms = Date.parse(text);
  const micro = /\.\d{3}(\d{1,3})/.exec(text);
  return micro ? ms + Number(micro[1].padEnd(3, "0")) / 1000 : ms;
}

export class SyncClient {
  // latencySampleMs: at most one latency sample per this many ms (0: every live
  // transaction; null: none); the samples go out latencyBatch at a time, or
  // latencyFlushMs after the first of a batch.
  constructor({ sockjsUrl, tokenUrl = "/api/sync/token/", topics, transports, csrfToken,
                minDelay = 500, maxDelay = 30000, heartbeatTimeout = 3.5 * HEARTBEAT_MS,
                latencySampleMs = 1000, latencyBatch = 10, latencyFlushMs = 10000 } = {}) {
    this.sockjsUrl = sockjsUrl;
    this.tokenUrl = tokenUrl;
    this.topicsFn = topics || (() => [...this.subs.keys()]);
    this.transports = transports || defaultTransports(); // given: forced (tests, diagnosis)
    this.csrfToken = csrfToken;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.heartbeatTimeout = heartbeatTimeout;
    this.subs = new Map(); // topic -> {last, handlers, revoked, resyncing, resuming, resyncs, retry}
    this.statusFns = [];
    this.status = null;
    this.sock = null;
    this.running = false;
    this.attempt = 0;
    this.timer = null;
    this.watchdog = null;
    this.lastPing = 0;
    this.lastHeard = 0;
    this.grant = null; // {token, topics: Set, expiresAt: ms by this clock | null}
    this.sentGrant = null; // the grant of the last auth sent, until its "authed"
    this.renewTimer = null;
    this.latencySampleMs = latencySampleMs;
    this.latencyBatch = Math.min(LATENCY_MAX_BATCH, Math.max(1, latencyBatch));
    this.latencyFlushMs = latencyFlushMs;
    this.clockOffset = null; // server clock - this clock, ms; null: unknown (see _clock)
    this.clockSeen = []; // the latest estimates of it (server time - arrival time), ms
    this.samples = []; // latency samples (ms) not sent yet
    this.lastSample = -Infinity;
    this.latencyTimer = null;
    this._online = () => { if (this.running && !this.sock) this._connectSoon(0); };
    this._offline = () => { if (this.sock) this.sock.close(); this._setStatus("offline"); };
  }

  onStatus(fn) { this.statusFns.push(fn); if (this.status) fn(this.status); }

  subscribe(topic, { since = 0, onEvents = () => {}, onResync = () => {}, onRevoked = () => {}, onPresence } = {}) {
    this.subs.set(topic, { last: since, handlers: { onEvents, onResync, onRevoked, onPresence },
                           revoked: false, resyncing: false, resuming: false, resyncs: 0, retry: null });
    this._sendSubscribe(topic);
    return () => this.unsubscribe(topic);
  }

  unsubscribe(topic) {
    const sub = this.subs.get(topic);
    if (!sub) return;
    clearTimeout(sub.retry);
    this.subs.delete(topic);
    this._send({ type: "unsubscribe", topic });
  }

  // After onResync reloaded state over REST: continue from the REST tpos. A topic that
  // keeps answering resync (e.g. the membership is not sequenced yet, so the server cannot
  // tell where it began) is retried with backoff, not in a tight loop.
  setPosition(topic, tpos) {
    const sub = this.subs.get(topic);
    if (!sub) return;
    sub.last = tpos;
    sub.resyncing = false;
    clearTimeout(sub.retry);
    if (sub.resyncs <= 1) {
      this._sendSubscribe(topic);
      return;
    }
    const base = Math.min(this.maxDelay, this.minDelay * 2 ** (sub.resyncs - 2));
    sub.retry = setTimeout(() => this._sendSubscribe(topic), base / 2 + Math.random() * base / 2);
  }

  start() {
    if (this.running) return;
    this.running = true;
    window.addEventListener("online", this._online);
    window.addEventListener("offline", this._offline);
    this._connect();
  }

  stop() {
    this.running = false;
    window.removeEventListener("online", this._online);
    window.removeEventListener("offline", this._offline);
    clearTimeout(this.timer);
    clearTimeout(this.renewTimer);
    clearInterval(this.watchdog);
    this._sendLatency();
    for (const sub of this.subs.values()) clearTimeout(sub.retry);
    if (this.sock) { const s = this.sock; this.sock = null; s.close(); }
  }

  // -- connection ------------------------------------------------------------------------

  async _connect() {
    if (!this.running) return;
    if (navigator.onLine === false) { this._setStatus("offline"); return; } // "online" resumes
    this._setStatus(this.attempt ? "reconnecting" : "connecting");
    let grant;
    try {
      grant = await this._usableGrant();
    } catch (err) {
      console.warn("sync: token request failed", err);
      this._connectSoon();
      return;
    }
    if (!this.running) return;
    if (!grant) { this._setStatus("offline"); return; } // nothing left to watch
    const sock = new SockJS(this.sockjsUrl || grant.url, null,
                            this.transports ? { transports: this.transports } : {});
    this.sock = sock;
    sock.onopen = () => {
      this.lastHeard = Date.now();
      this._sendAuth(grant);
      for (const [topic, sub] of this.subs) {
        sub.resuming = false;
        this._sendSubscribe(topic);
      }
      clearInterval(this.watchdog);
      // sockjs-client never notices a dead connection: no message for ~3 heartbeats
      // means the server or the network is gone.
      this.watchdog = setInterval(() => {
        if (Date.now() - this.lastHeard > this.heartbeatTimeout) sock.close();
      }, HEARTBEAT_MS);
      this.lastPing = Date.now();
    };
    sock.onmessage = (e) => {
      this.lastHeard = Date.now();
      if (this.lastHeard - this.lastPing >= PRESENCE_PING_MS
          && [...this.subs.values()].some((s) => s.handlers.onPresence && !s.revoked)) {
        this.lastPing = this.lastHeard;
        this._send({ type: "ping" });
      }
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      this._handle(msg);
    };
    sock.onclose = () => {
      clearInterval(this.watchdog);
      if (this.sock !== sock) return; // stop() or a newer socket
      this.sock = null;
      clearTimeout(this.renewTimer);
      this._connectSoon();
    };
  }

  _connectSoon(delay) {
    if (!this.running) return;
    clearTimeout(this.timer);
    if (delay === undefined) {
      const base = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
      delay = base / 2 + Math.random() * base / 2; // jitter: reconnect storms spread out
      this.attempt += 1;
    }
    this._setStatus(navigator.onLine === false ? "offline" : "reconnecting");
    this.timer = setTimeout(() => this._connect(), delay);
  }

  // -- tokens ----------------------------------------------------------------------------

  _activeTopics() {
    return this.topicsFn().filter((t) => !(this.subs.get(t) || {}).revoked);
  }

  // The current token if it still covers every topic and is valid for a while (a reconnect
  // after a short outage needs no new one; the server decides membership anyway), else a
  // fresh one. null when no topic is left to watch.
  async _usableGrant() {
    const g = this.grant;
    const topics = this._activeTopics();
    if (g && g.expiresAt !== null && g.expiresAt - Date.now() > REUSE_MIN_MS && topics.every((t) => g.topics.has(t))) {
      return g;
    }
    return this._fetchGrant();
  }

  async _requestToken(topics) {
    return fetch(this.tokenUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": this.csrfToken || "" },
      body: JSON.stringify({ topics }),
    });
  }

  // A fresh token for the active topics. The portal refuses (403) a request naming any
  // topic the user may no longer watch: then each topic is asked alone, the refused ones
  // end (onRevoked), and the rest get their token.
  async _fetchGrant() {
    const topics = this._activeTopics();
    if (!topics.length) return null;
    let resp = await this._requestToken(topics);
    if (resp.status === 403) {
      const refused = [];
      for (const topic of topics) {
        const alone = topics.length === 1 ? resp : await this._requestToken([topic]);
        if (alone.status === 403) refused.push(topic);
        else if (!alone.ok) throw new Error(`token endpoint answered ${alone.status}`);
      }
      if (!refused.length) throw new Error("token endpoint answered 403");
      for (const topic of refused) this._revoke(topic);
      const rest = this._activeTopics();
      if (!rest.length) return null;
      resp = await this._requestToken(rest);
    }
    if (!resp.ok) throw new Error(`token endpoint answered ${resp.status}`);
    const body = await resp.json();
    const expiresAt = typeof body.expires_at === "number" ? body.expires_at * 1000 : null;
    this.grant = { token: body.token, url: body.url, topics: new Set(body.topics || topics), expiresAt };
    return this.grant;
  }

  _sendAuth(grant) {
    this.sentGrant = grant;
    this._send({ type: "auth", token: grant.token });
  }

  // "authed" says how long the token lives by the server's clock: renew over this open
  // connection well before then (subscriptions carry on; nothing is resent).
  _authed(msg) {
    this._clock(msg.server_time);
    const grant = this.sentGrant || this.grant;
    clearTimeout(this.renewTimer);
    if (!grant || typeof msg.expires_in !== "number") return;
    const lifetime = msg.expires_in * 1000;
    grant.expiresAt = Date.now() + lifetime;
    this.grant = grant;
    const delay = lifetime > 2 * RENEW_AHEAD_MS ? lifetime - RENEW_AHEAD_MS : lifetime / 2;
    this.renewTimer = setTimeout(() => this._renew(), delay);
  }

  async _renew() {
    const sock = this.sock;
    if (!this.running || !sock || sock.readyState !== 1) return; // a reconnect authenticates anyway
    let grant;
    try {
      grant = await this._fetchGrant();
    } catch (err) {
      console.warn("sync: token renewal failed", err);
      const left = this.grant && this.grant.expiresAt !== null ? this.grant.expiresAt - Date.now() : 0;
      if (left > 0) this.renewTimer = setTimeout(() => this._renew(), Math.min(5000, Math.max(100, left / 3)));
      return; // at expiry the server ends the subscriptions; the client then reconnects
    }
    if (grant && this.sock === sock && sock.readyState === 1) this._sendAuth(grant);
  }

  _revoke(topic) {
    const sub = this.subs.get(topic);
    if (!sub || sub.revoked) return;
    sub.revoked = true;
    clearTimeout(sub.retry);
    if (sub.handlers.onPresence) sub.handlers.onPresence([]); // nobody is shown any more
    sub.handlers.onRevoked();
  }

  _send(msg) {
    if (this.sock && this.sock.readyState === 1) this.sock.send(JSON.stringify(msg));
  }

  _sendSubscribe(topic) {
    const sub = this.subs.get(topic);
    if (sub && !sub.revoked && !sub.resyncing) {
      this._send(sub.handlers.onPresence ? { type: "subscribe", topic, since: sub.last, presence: true }
                                         : { type: "subscribe", topic, since: sub.last });
    }
  }

  _setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    for (const fn of this.statusFns) fn(status);
  }

  // -- messages --------------------------------------------------------------------------

  _handle(msg) {
    const sub = msg.topic !== undefined ? this.subs.get(msg.topic) : null;
    switch (msg.type) {
      case "authed":
        this.attempt = 0;
        this._setStatus("live");
        this._authed(msg);
        break;
      case "events":
      case "recovered":
        // Only live events are measured: a recovered one is as old as the outage was.
        if (sub && !sub.revoked && !sub.resyncing) this._deliver(sub, msg.topic, msg.events, msg.type === "events");
        break;
      case "subscribed":
        if (sub) {
          sub.last = Math.max(sub.last, msg.tpos);
          sub.resuming = false;
          sub.resyncs = 0;
        }
        break;
      case "resync":
        if (sub && !sub.resyncing) {
          sub.resyncing = true; // nothing is applied until setPosition() after the reload
          sub.resuming = false;
          sub.resyncs += 1;
          Promise.resolve(sub.handlers.onResync(msg.tpos)).catch((err) => console.error("sync: onResync failed", err));
        }
        break;
      case "revoked":
        if (sub) this._revoke(msg.topic);
        break;
      case "presence": // the whole list each time; only a live subscription receives it
        if (sub && !sub.revoked && sub.handlers.onPresence) sub.handlers.onPresence(msg.users || []);
        break;
      case "error":
        console.warn(`sync: ${msg.code}: ${msg.message}`);
        // A token problem (expired, or a renewal that no longer lists a topic) is fixed by
        // a fresh token: reconnect, which fetches one; the portal refuses topics that are
        // no longer the user's, and those end (onRevoked).
        if (msg.code === "token_expired" || msg.code === "bad_token" || msg.code === "unauthenticated"
            || (msg.code === "forbidden_topic" && msg.ref === "auth")) {
          this.grant = null;
          if (this.sock) this.sock.close();
        }
        break;
      case "heartbeat":
        this._clock(msg.time);
        break;
      default: // pong: the watchdog already noted that the server is alive
    }
  }

  // The server's clock, which commit times (stamped by the database) are compared with.
  // A message stamped with the server's time arrives a one-way delay later, so server
  // time - arrival time underestimates the offset by that delay: the largest of the
  // latest estimates (authed, then a heartbeat a second) is the one that came fastest.
  // That matters where a transport holds messages back (a browser hands XHR-streamed
  // bytes over at most every 50 ms): some heartbeat lands right after a handover.
  _clock(serverTime) {
    if (typeof serverTime !== "number" || !Number.isFinite(serverTime)) return;
    this.clockSeen.push(serverTime * 1000 - wallNow());
    if (this.clockSeen.length > 60) this.clockSeen.shift(); // a minute: clocks drift and get adjusted
    this.clockOffset = Math.max(...this.clockSeen);
  }

  // Drop what was already applied (tpos <= last), then hand over whole transactions:
  // both "events" (live; a busy topic's message carries several whole transactions) and
  // "recovered" are split at tx_last. Only the next position is ever applied: an event
  // above last+1 means something was missed, so nothing from there on is applied and the
  // topic resumes since last (the server answers recovered, or resync).
  _deliver(sub, topic, events, live = false) {
    let tx = [];
    for (const e of events) {
      if (e.tpos <= sub.last) continue;
      if (e.tpos !== sub.last + 1) {
        if (!sub.resuming) {
          console.warn(`sync: ${topic} jumped from tpos ${sub.last} to ${e.tpos}; resuming`);
          sub.resuming = true;
          this._send({ type: "subscribe", topic, since: sub.last });
        }
        break;
      }
      sub.last = e.tpos;
      tx.push(e);
      if (e.tx_last) { this._apply(sub, tx, live); tx = []; }
    }
    if (tx.length) this._apply(sub, tx, live);
  }

  _apply(sub, tx, live) {
    // Poison rows (error set) keep their position but carry no data to apply.
    const applicable = tx.filter((e) => !e.error);
    if (!applicable.length) return;
    sub.handlers.onEvents(applicable);
    if (live) this._sample(applicable[applicable.length - 1]);
  }

  // -- what the user sees ----------------------------------------------------------------

  // One sample per latencySampleMs at most: commit -> applied (onEvents returned, the page
  // updated), by the server's clock. Cheap: a clock read per transaction, and the parse
  // only for the sampled one. The sample is the first transaction applied after the
  // interval: when a transport hands over several at once (a browser's XHR delivers
  // streamed bytes at most every 50 ms), the oldest of them, so the figure errs high.
  _sample(event) {
    if (this.latencySampleMs === null || !(this.latencySampleMs >= 0) || this.clockOffset === null) return;
    const now = wallNow();
    if (now - this.lastSample < this.latencySampleMs) return;
    const committed = commitTimeMs(event.committed_at);
    if (!Number.isFinite(committed)) return;
    this.lastSample = now;
    // Below zero only by the clock estimate's error: the latency was about nothing.
    this.samples.push(Math.round(Math.max(0, now + this.clockOffset - committed) * 100) / 100);
    if (this.samples.length >= this.latencyBatch) this._sendLatency();
    else if (this.latencyTimer === null) this.latencyTimer = setTimeout(() => this._sendLatency(), this.latencyFlushMs);
  }

  _sendLatency() {
    clearTimeout(this.latencyTimer);
    this.latencyTimer = null;
    // Samples taken while disconnected are dropped with the batch: they are only samples.
    while (this.samples.length) this._send({ type: "latency", samples: this.samples.splice(0, LATENCY_MAX_BATCH) });
  }
}
