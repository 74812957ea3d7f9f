// Load client for figures 5, 6 and 8: one node process holding many websocket connections
// to <url>/websocket, each doing auth + subscribe, then counting deliveries.
//
// usage: node clients.js '<json options>'   options: url (ws://host:port/sync/websocket),
//   n, token, topic, connectRate (new connections per tick), sample (max latencies kept),
//   marker (the bytes that occur once per event: '"b:' in ours, '"t":' in the peer's),
//   parseShare (share of messages parsed for latency), client ("raw", default, or "ws")
// stdout: "connected <n> <failed>" once every connection is subscribed (or failed);
// stdin commands, one per line: "reset" (zero counters), "report" (prints one JSON line),
// "close" (closes everything and exits).
// The send time comes from the event: `t` (peer) or data.text "b:<seq>:<epoch ms>" (ours).
//
// Two clients, the same for both servers in each figure. "raw" (fan-out, figures 5 and 8): a
// minimal websocket client on node's `net` sockets; the npm `ws` library's stream machinery
// and a JSON.parse per message cost these processes more CPU than either server spent per
// delivery, on the cores they share with the server measured. It counts events by their
// marker and parses a random `parseShare` of messages for latency (each event is sampled with
// the same probability, so the sample stays unbiased). "ws" (idle connections, figures 6 and
// 8): the npm `ws` client these figures were first measured with; CPU does not matter there,
// and the server's memory per connection depends on the client (docs/performance.md).
"use strict";
const crypto = require("crypto");
const net = require("net");
const readline = require("readline");

const opt = JSON.parse(process.argv[2]);
const sampleMax = opt.sample || 100000;
const socks = [];
let fragmented = 0;
let subscribed = 0, failed = 0, received = 0, firstRecv = 0, lastRecv = 0, seen = 0, bytes = 0;
let lat = [];

function nowMs() { return performance.timeOrigin + performance.now(); }

function sentAt(ev) {
  if (typeof ev.t === "number") return ev.t;
  const text = ev.data && ev.data.text;
  if (typeof text === "string" && text.startsWith("b:")) return parseFloat(text.split(":")[2]);
  return null;
}

const marker = Buffer.from(opt.marker || '"b:');
const parseShare = opt.parseShare || 0.1;
const EVENTS = Buffer.from('{"type":"events"'), RECOVERED = Buffer.from('{"type":"recovered"');

function startsWith(buf, prefix) {
  return buf.length >= prefix.length && buf.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

// One server message (a Buffer): counts its events; parses a random share for latency.
function onMessage(buf) {
  const now = nowMs();
  if (!startsWith(buf, EVENTS) && !startsWith(buf, RECOVERED)) return;
  bytes += buf.length;
  let n = 0;
  for (let i = buf.indexOf(marker); i >= 0; i = buf.indexOf(marker, i + marker.length)) n++;
  if (!n) return;
  received += n;
  if (!firstRecv) firstRecv = now;
  lastRecv = now;
  if (Math.random() >= parseShare) return;
  let msg;
  try { msg = JSON.parse(buf.toString()); } catch (e) { return; }
  for (const ev of msg.events) {
    const t = sentAt(ev);
    if (t === null) continue;
    // Reservoir sampling keeps the latency sample unbiased whatever the count.
    seen += 1;
    if (lat.length < sampleMax) lat.push(now - t);
    else { const j = Math.floor(Math.random() * seen); if (j < sampleMax) lat[j] = now - t; }
  }
}

// The exchange both clients speak over their text messages: auth -> authed, subscribe ->
// subscribed (error or resync: failed; no answer in 30 s: failed), then every message is
// counted (onMessage). send(obj) writes one text message; resolve settles the connection's
// promise, once.
function subscriber(resolve, send) {
  let done = false;
  const settle = (ok) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    ok ? subscribed++ : failed++;
    resolve();
  };
  const timer = setTimeout(() => settle(false), 30000);
  return {
    settle,
    start: () => send({ type: "auth", token: opt.token }),
    onText: (payload) => {
      if (done) { onMessage(payload); return; }
      let msg;
      try { msg = JSON.parse(payload.toString()); } catch (e) { return; }
      if (msg.type === "authed") send({ type: "subscribe", topic: opt.topic, since: opt.since || 0 });
      else if (msg.type === "subscribed") settle(true);
      else if (msg.type === "error" || msg.type === "resync") settle(false);
    },
  };
}

// The raw client (RFC 6455 text frames, no extensions). Every socket reads into one shared
// buffer (node's `onread`); a frame split across reads is copied out before the buffer is
// reused.
const SHARED = Buffer.allocUnsafe(1 << 20);

function clientFrame(opcode, payload) {
  const n = payload.length;
  const head = n < 126 ? 2 : 4;
  const frame = Buffer.allocUnsafe(head + 4 + n);
  frame[0] = 0x80 | opcode;
  if (n < 126) frame[1] = 0x80 | n; else { frame[1] = 0x80 | 126; frame.writeUInt16BE(n, 2); }
  const mask = crypto.randomBytes(4);
  mask.copy(frame, head);
  for (let i = 0; i < n; i++) frame[head + 4 + i] = payload[i] ^ mask[i & 3];
  return frame;
}

function openRaw(i) {
  return new Promise((resolve) => {
    const u = new URL(opt.url);
    let upgraded = false, pending = null;
    const sub = subscriber(resolve, (obj) => sock.write(clientFrame(1, Buffer.from(JSON.stringify(obj)))));
    const onData = (chunk) => {
      const data = pending ? Buffer.concat([pending, chunk]) : chunk;
      pending = null;
      let off = 0;
      if (!upgraded) {
        const end = data.indexOf("\r\n\r\n");
        if (end < 0) { pending = Buffer.from(data); return; }
        if (!/^HTTP\/1\.1 101/.test(data.subarray(0, 12).toString("latin1"))) {
          sub.settle(false); sock.destroy(); return;
        }
        upgraded = true;
        off = end + 4;
        sub.start();
      }
      while (data.length - off >= 2) {
        const b0 = data[off], b1 = data[off + 1] & 0x7f;
        let head = 2, len = b1;
        if (b1 === 126) { if (data.length - off < 4) break; len = data.readUInt16BE(off + 2); head = 4; }
        else if (b1 === 127) { if (data.length - off < 10) break; len = Number(data.readBigUInt64BE(off + 2)); head = 10; }
        if (data.length - off < head + len) break;
        const payload = data.subarray(off + head, off + head + len);
        off += head + len;
        const op = b0 & 0x0f;
        if ((b0 & 0x80) === 0 || op === 0) { fragmented += 1; continue; }  // neither server fragments
        if (op === 1) sub.onText(payload);
        else if (op === 9) sock.write(clientFrame(0xA, payload));
        else if (op === 8) sock.end();
      }
      if (off < data.length) pending = Buffer.from(data.subarray(off)); // a copy: SHARED is reused
    };
    const sock = net.connect({ host: u.hostname, port: Number(u.port), noDelay: true,
                               onread: { buffer: SHARED, callback: (nread, buf) => { onData(buf.subarray(0, nread)); } } });
    sock.on("connect", () => {
      const key = crypto.randomBytes(16).toString("base64");
      sock.write(`GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                 `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nOrigin: ${opt.origin}\r\n\r\n`);
    });
    sock.on("error", () => sub.settle(false));
    socks.push(sock);
  });
}

function openWs(i) {
  const WebSocket = require("ws"); // npm, installed by `make bench`; the raw client needs nothing
  return new Promise((resolve) => {
    const ws = new WebSocket(opt.url, { perMessageDeflate: false, origin: opt.origin, skipUTF8Validation: true });
    const sub = subscriber(resolve, (obj) => ws.send(JSON.stringify(obj)));
    ws.on("open", sub.start);
    ws.on("message", sub.onText);
    ws.on("error", () => sub.settle(false));
    socks.push(ws);
  });
}

const open = opt.client === "ws" ? openWs : openRaw;

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
    console.log(JSON.stringify({ subscribed, failed, fragmented, received, firstRecv, lastRecv, bytes, lat }));
  } else if (cmd === "close") {
    for (const sock of socks) (sock.terminate ? sock.terminate() : sock.destroy());
    process.exit(0);
  }
}).on("close", () => process.exit(0));

main();
