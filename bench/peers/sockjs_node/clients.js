// Load client for figures 5 and 6: one node process holding many raw websocket connections
// (npm `ws`) to <url>/websocket, each doing auth + subscribe, then counting deliveries.
//
// usage: node clients.js '<json options>'   options: url (ws://host:port/sync/websocket),
//   n, token, topic, connectRate (new connections per tick), sample (max latencies kept)
// stdout: "connected <n> <failed>" once every connection is subscribed (or failed);
// stdin commands, one per line: "reset" (zero counters), "report" (prints one JSON line),
// "close" (closes everything and exits).
// The send time comes from the event: `t` (peer) or data.text "b:<seq>:<epoch ms>" (ours).
"use strict";
const WebSocket = require("ws");
const readline = require("readline");

const opt = JSON.parse(process.argv[2]);
const sampleMax = opt.sample || 100000;
const socks = [];
let subscribed = 0, failed = 0, received = 0, firstRecv = 0, lastRecv = 0, seen = 0, bytes = 0;
let lat = [];

function nowMs() { return performance.timeOrigin + performance.now(); }

function sentAt(ev) {
  if (typeof ev.t === "number") return ev.t;
  const text = ev.data && ev.data.text;
  if (typeof text === "string" && text.startsWith("b:")) return parseFloat(text.split(":")[2]);
  return null;
}

function onMessage(raw) {
  const now = nowMs();
  let msg;
  try { msg = JSON.parse(raw); } catch (e) { return; }
  if (msg.type !== "events" && msg.type !== "recovered") return;
  bytes += raw.length;
  for (const ev of msg.events) {
    const t = sentAt(ev);
    if (t === null) continue;
    received += 1;
    if (!firstRecv) firstRecv = now;
    lastRecv = now;
    // Reservoir sampling keeps the latency sample unbiased whatever the count.
    seen += 1;
    if (lat.length < sampleMax) lat.push(now - t);
    else { const j = Math.floor(Math.random() * seen); if (j < sampleMax) lat[j] = now - t; }
  }
}

function open(i) {
  return new Promise((resolve) => {
    const ws = new WebSocket(opt.url, { perMessageDeflate: false, origin: opt.origin });
    let done = false;
    const finish = (ok) => { if (!done) { done = true; ok ? subscribed++ : failed++; resolve(); } };
    const timer = setTimeout(() => finish(false), 30000);
    ws.on("open", () => ws.send(JSON.stringify({ type: "auth", token: opt.token })));
    ws.on("message", (data) => {
      const text = data.toString();
      if (!done) {
        let msg;
        try { msg = JSON.parse(text); } catch (e) { return; }
        if (msg.type === "authed") ws.send(JSON.stringify({ type: "subscribe", topic: opt.topic, since: opt.since || 0 }));
        else if (msg.type === "subscribed") { clearTimeout(timer); finish(true); }
        else if (msg.type === "error" || msg.type === "resync") { clearTimeout(timer); finish(false); }
        return;
      }
      onMessage(text);
    });
    ws.on("error", () => { clearTimeout(timer); finish(false); });
    socks.push(ws);
  });
}

async function main() {
  const batch = opt.connectRate || 200;
  for (let i = 0; i < opt.n; i += batch) {
    const wave = [];
    for (let j = i; j < Math.min(opt.n, i + batch); j++) wave.push(open(j));
    await Promise.all(wave);
  }
  console.log(`connected ${subscribed} ${failed}`);
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = line.trim();
  if (cmd === "reset") { received = 0; firstRecv = 0; lastRecv = 0; seen = 0; bytes = 0; lat = []; console.log("reset"); }
  else if (cmd === "report") {
    console.log(JSON.stringify({ subscribed, failed, received, firstRecv, lastRecv, bytes, lat }));
  } else if (cmd === "close") {
    for (const ws of socks) ws.terminate();
    process.exit(0);
  }
}).on("close", () => process.exit(0));

main();
