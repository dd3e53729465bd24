/**
 * Idle connections for the memory scenarios: SSE streams and WebSockets that
 * stay open and quiet. Thousands are opened at once (paced only while their
 * TCP connections are being set up), because a quiet SSE stream through
 * Runnel gets its response headers with its first heartbeat: opening them
 * in batches that each wait for readiness would cost one heartbeat per batch.
 */
import { readFileSync } from "node:fs";
import { type ClientRequest, request } from "node:http";
import WebSocket from "ws";
import { agent, type Target } from "./load.js";

/** An open connection; `close()` destroys it. */
export interface IdleConnection {
  /** The response headers (SSE) or the `started` frame (WS) came. */
  readonly ready: boolean;
  close(): void;
}

/** Opens one idle connection from `localAddress`; calls `connected` once its TCP connection is up (or it failed). */
export type IdleOpener = (localAddress: string, connected: () => void) => Promise<IdleConnection>;

/** Opens an SSE stream that stays quiet; resolves once its response headers arrive (or after `timeoutMs`, not ready). */
export function openIdleSse(target: Target, timeoutMs: number): IdleOpener {
  return (localAddress, connected) =>
    new Promise((resolve) => {
      const body = JSON.stringify({ model: target.model, stream: true, messages: [{ role: "user", content: "bench" }] });
      let call: ClientRequest | undefined;
      const connection = (ready: boolean): IdleConnection => ({ ready, close: () => call?.destroy() });
      const timer = setTimeout(() => {
        connected();
        resolve(connection(false));
      }, timeoutMs);
      call = request(`${target.baseUrl}/v1/chat/completions`, {
        method: "POST",
        agent,
        localAddress,
        headers: { "content-type": "application/json", accept: "text/event-stream", "content-length": Buffer.byteLength(body) },
      });
      call.on("socket", (socket) => {
        if (socket.connecting) socket.once("connect", connected);
        else connected();
      });
      call.on("error", () => {
        clearTimeout(timer);
        connected();
        resolve(connection(false));
      });
      call.on("response", (response) => {
        clearTimeout(timer);
        response.resume();
        resolve(connection(response.statusCode === 200));
      });
      call.end(body);
    });
}

/** Opens a WebSocket to `/v1/ws` carrying one quiet stream; resolves on its `started` frame (or after `timeoutMs`, not ready). */
export function openIdleWs(target: Target, timeoutMs: number): IdleOpener {
  return (localAddress, connected) =>
    new Promise((resolve) => {
      const socket = new WebSocket(`${target.baseUrl.replace(/^http/, "ws")}/v1/ws`, ["runnel.v1"], { perMessageDeflate: false, localAddress });
      const connection = (ready: boolean): IdleConnection => ({ ready, close: () => socket.terminate() });
      let settled = false;
      const settle = (ready: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        connected();
        resolve(connection(ready));
      };
      const timer = setTimeout(() => settle(false), timeoutMs);
      socket.on("open", () => {
        connected();
        socket.send(JSON.stringify({ type: "request", id: 1, body: { model: target.model, messages: [{ role: "user", content: "bench" }] } }));
      });
      socket.on("message", (data) => {
        const text = String(data);
        if (text.startsWith('{"type":"started"') || text.includes('"type":"started"')) settle(true);
        else if (text.includes('"type":"error"')) settle(false);
      });
      socket.on("error", () => settle(false));
      socket.on("close", () => settle(false));
    });
}

/** The local port range connect() picks ephemeral ports from. */
function ephemeralPorts(): number {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    if (low !== undefined && high !== undefined && high > low) return high - low + 1;
  } catch {
    // not Linux: assume the IANA range
  }
  return 16_384;
}

/**
 * Source addresses for `count` connections to one port: 127.0.0.1, and more
 * of 127.0.0.0/8 (every one is local) when one address would use more than
 * half of the ephemeral port range. The destination is always 127.0.0.1.
 */
export function sourceAddresses(count: number): string[] {
  const needed = Math.max(1, Math.ceil(count / Math.floor(ephemeralPorts() / 2)));
  return Array.from({ length: Math.min(needed, 250) }, (_, index) => `127.0.0.${index + 1}`);
}

/**
 * Opens `count` connections, spread over `addresses`, with at most
 * `connecting` of them setting up their TCP connection at a time (so the
 * listen backlog never overflows); resolves once every one is ready or gave up.
 */
export async function openMany(count: number, connecting: number, addresses: readonly string[], open: IdleOpener): Promise<IdleConnection[]> {
  const opening: Promise<IdleConnection>[] = [];
  let inFlight = 0;
  let wake: (() => void) | undefined;
  for (let index = 0; index < count; index++) {
    while (inFlight >= connecting) await new Promise<void>((resolve) => (wake = resolve));
    inFlight += 1;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      inFlight -= 1;
      wake?.();
      wake = undefined;
    };
    opening.push(open(addresses[index % addresses.length] ?? "127.0.0.1", release));
  }
  return Promise.all(opening);
}
