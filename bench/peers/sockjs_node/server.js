// Peer for figures 5 and 6: sockjs-node (npm `sockjs`) on node's http server, speaking the
// same subscribe handshake as our sync server (auth -> authed, subscribe -> subscribed) and
// broadcasting events of the same byte size, fed by its own timer (no ZeroMQ, no database).
//
// usage: node server.js <port>
//   POST /fire?rate=R&duration=D&size=S&topic=T   broadcast R events/s for D s, each message S bytes
//   GET  /stats                                   {"connections", "subscribers", "rss", "sent"}
// Prints "ready <port>" when listening. Bound to 127.0.0.1 only.
"use strict";
const http = require("http");
const sockjs = require("sockjs");

const port = parseInt(process.argv[2] || "0", 10);
const topics = new Map(); // topic -> Set(conn)
let connections = 0;
let sent = 0;

const service = sockjs.createServer({ log: () => {}, heartbeat_delay: 25000, disconnect_delay: 5000 });
service.on("connection", (conn) => {
  connections += 1;
  const mine = new Set();
  conn.on("data", (text) => {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { conn.write(JSON.stringify({ type: "error", code: "bad_json" })); return; }
    if (msg.type === "auth") conn.write(JSON.stringify({ type: "authed", user: "bench" }));
    else if (msg.type === "subscribe") {
      if (!topics.has(msg.topic)) topics.set(msg.topic, new Set());
      topics.get(msg.topic).add(conn);
      mine.add(msg.topic);
      conn.write(JSON.stringify({ type: "subscribed", topic: msg.topic, tpos: 0 }));
    } else if (msg.type === "ping") conn.write(JSON.stringify({ type: "pong", id: msg.id }));
  });
  conn.on("close", () => {
    connections -= 1;
    for (const t of mine) topics.get(t).delete(conn);
  });
});

function nowMs() { return performance.timeOrigin + performance.now(); }

// One message per event, encoded once and written to every subscriber (what our hub does too).
// `t` is when the event was due by the offered rate, not when the loop got to it: a server
// that falls behind its schedule shows it in the latency (our writer is never behind).
function broadcast(topic, seq, size, due) {
  const subs = topics.get(topic);
  const ev = { seq: seq, t: due, pad: "" };
  let text = JSON.stringify({ type: "events", topic: topic, events: [ev] });
  if (text.length < size) {
    ev.pad = "x".repeat(size - text.length);
    text = JSON.stringify({ type: "events", topic: topic, events: [ev] });
  }
  if (!subs) return;
  for (const c of subs) c.write(text);
  sent += 1;
}

function fire(topic, rate, duration, size) {
  const start = nowMs();
  const total = Math.round(rate * duration);
  let seq = 0;
  const tick = () => {
    const due = Math.min(total, Math.floor(((nowMs() - start) / 1000) * rate) + 1);
    while (seq < due) { seq += 1; broadcast(topic, seq, size, start + ((seq - 1) * 1000) / rate); }
    if (seq < total) setTimeout(tick, 1);
  };
  tick();
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  if (url.pathname === "/fire") {
    const q = url.searchParams;
    fire(q.get("topic") || "checklist:1", parseFloat(q.get("rate") || "100"), parseFloat(q.get("duration") || "1"),
      parseInt(q.get("size") || "200", 10));
    res.writeHead(202, { "content-type": "application/json" });
    res.end("{}");
  } else if (url.pathname === "/stats") {
    let subscribers = 0;
    for (const s of topics.values()) subscribers += s.size;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ connections, subscribers, rss: process.memoryUsage().rss, sent }));
  }
});
service.installHandlers(server, { prefix: "/sync" });
server.listen(port, "127.0.0.1", () => console.log(`ready ${server.address().port}`));
process.on("SIGTERM", () => process.exit(0));
