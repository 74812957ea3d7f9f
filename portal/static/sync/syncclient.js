// Browser client of the sync server (ES module). Wraps the global SockJS (sockjs-client,
// /static/vendor/sockjs.min.js) and adds what it lacks: a fresh token per (re)connect,
// reconnect with exponential backoff + jitter, resume from the last tpos per topic,
// duplicate dropping, whole-transaction delivery and a dead-connection watchdog.
//
//   import { SyncClient } from "/static/sync/syncclient.js";
//   const c = new SyncClient({ sockjsUrl, tokenUrl: "/api/sync/token/", csrfToken,
//                              topics: () => ["checklist:1"] });
//   c.onStatus((s) => ...);                      // connecting | live | reconnecting | offline
//   c.subscribe("checklist:1", { since: restTpos, onEvents(events) {...},
//                                 async onResync() { reload(); c.setPosition(topic, tpos); },
//                                 onRevoked() {...} });
//   c.start();  ...  c.stop();

const HEARTBEAT_MS = 1000; // the server sends {"type":"heartbeat"} every second

export class SyncClient {
  constructor({ sockjsUrl, tokenUrl = "/api/sync/token/", topics, transports, csrfToken,
                minDelay = 500, maxDelay = 30000, heartbeatTimeout = 3.5 * HEARTBEAT_MS } = {}) {
    this.sockjsUrl = sockjsUrl;
    this.tokenUrl = tokenUrl;
    this.topicsFn = topics || (() => [...this.subs.keys()]);
    this.transports = transports;
    this.csrfToken = csrfToken;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.heartbeatTimeout = heartbeatTimeout;
    this.subs = new Map(); // topic -> {last, handlers, revoked, resyncing}
    this.statusFns = [];
    this.status = null;
    this.sock = null;
    this.running = false;
    this.attempt = 0;
    this.timer = null;
    this.watchdog = null;
    this.lastHeard = 0;
    this._online = () => { if (this.running && !this.sock) this._connectSoon(0); };
    this._offline = () => { if (this.sock) this.sock.close(); this._setStatus("offline"); };
  }

  onStatus(fn) { this.statusFns.push(fn); if (this.status) fn(this.status); }

  subscribe(topic, { since = 0, onEvents = () => {}, onResync = () => {}, onRevoked = () => {} } = {}) {
    this.subs.set(topic, { last: since, handlers: { onEvents, onResync, onRevoked },
                           revoked: false, resyncing: false });
    this._sendSubscribe(topic);
    return () => this.unsubscribe(topic);
  }

  unsubscribe(topic) {
    if (this.subs.delete(topic)) this._send({ type: "unsubscribe", topic });
  }

  // After onResync reloaded state over REST: continue from the REST tpos.
  setPosition(topic, tpos) {
    const sub = this.subs.get(topic);
    if (!sub) return;
    sub.last = tpos;
    sub.resyncing = false;
    this._sendSubscribe(topic);
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
    clearInterval(this.watchdog);
    if (this.sock) { const s = this.sock; this.sock = null; s.close(); }
  }

  // -- connection ------------------------------------------------------------------------

  async _connect() {
    if (!this.running) return;
    if (navigator.onLine === false) { this._setStatus("offline"); return; } // "online" resumes
    this._setStatus(this.attempt ? "reconnecting" : "connecting");
    let grant;
    try {
      grant = await this._fetchToken();
    } catch (err) {
      console.warn("sync: token request failed", err);
      this._connectSoon();
      return;
    }
    if (!this.running) return;
    const sock = new SockJS(this.sockjsUrl || grant.url, null,
                            this.transports ? { transports: this.transports } : {});
    this.sock = sock;
    sock.onopen = () => {
      this.lastHeard = Date.now();
      this._send({ type: "auth", token: grant.token });
      for (const topic of this.subs.keys()) this._sendSubscribe(topic);
      clearInterval(this.watchdog);
      // sockjs-client never notices a dead connection: no message for ~3 heartbeats
      // means the server or the network is gone.
      this.watchdog = setInterval(() => {
        if (Date.now() - this.lastHeard > this.heartbeatTimeout) sock.close();
      }, HEARTBEAT_MS);
    };
    sock.onmessage = (e) => {
      this.lastHeard = Date.now();
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      this._handle(msg);
    };
    sock.onclose = () => {
      clearInterval(this.watchdog);
      if (this.sock !== sock) return; // stop() or a newer socket
      this.sock = null;
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

  async _fetchToken() {
    const topics = this.topicsFn().filter((t) => !(this.subs.get(t) || {}).revoked);
    const resp = await fetch(this.tokenUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": this.csrfToken || "" },
      body: JSON.stringify({ topics }),
    });
    if (!resp.ok) throw new Error(`token endpoint answered ${resp.status}`);
    return resp.json();
  }

  _send(msg) {
    if (this.sock && this.sock.readyState === 1) this.sock.send(JSON.stringify(msg));
  }

  _sendSubscribe(topic) {
    const sub = this.subs.get(topic);
    if (sub && !sub.revoked && !sub.resyncing) this._send({ type: "subscribe", topic, since: sub.last });
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
        break;
      case "events":
      case "recovered":
        if (sub && !sub.revoked && !sub.resyncing) this._deliver(sub, msg.events);
        break;
      case "subscribed":
        if (sub) sub.last = Math.max(sub.last, msg.tpos);
        break;
      case "resync":
        if (sub && !sub.resyncing) {
          sub.resyncing = true; // nothing is applied until setPosition() after the reload
          Promise.resolve(sub.handlers.onResync(msg.tpos)).catch((err) => console.error("sync: onResync failed", err));
        }
        break;
      case "revoked":
        if (sub) { sub.revoked = true; sub.handlers.onRevoked(); }
        break;
      case "error":
        console.warn(`sync: ${msg.code}: ${msg.message}`);
        // A token problem is fixed by a fresh token: reconnect (which fetches one).
        if (msg.code === "token_expired" || msg.code === "bad_token" || msg.code === "unauthenticated") {
          if (this.sock) this.sock.close();
        }
        break;
      default: // heartbeat, pong: the watchdog already noted that the server is alive
    }
  }

  // Drop what was already applied (tpos <= last), then hand over whole transactions:
  // both "events" (live; a busy topic's message carries several whole transactions) and
  // "recovered" are split at tx_last.
  _deliver(sub, events) {
    const fresh = events.filter((e) => e.tpos > sub.last);
    if (!fresh.length) return;
    sub.last = fresh[fresh.length - 1].tpos;
    let tx = [];
    for (const e of fresh) {
      tx.push(e);
      if (e.tx_last) { this._apply(sub, tx); tx = []; }
    }
    if (tx.length) this._apply(sub, tx);
  }

  _apply(sub, tx) {
    // Poison rows (error set) keep their position but carry no data to apply.
    const applicable = tx.filter((e) => !e.error);
    if (applicable.length) sub.handlers.onEvents(applicable);
  }
}
