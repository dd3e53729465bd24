/** Idle connections for the memory scenarios: SSE streams and WebSockets that stay open and quiet. */
import { type ClientRequest, request } from "node:http";
import WebSocket from "ws";
import { agent, type Target } from "./load.js";

/** An open connection; `close()` destroys it. */
export interface IdleConnection {
  /** The response headers (SSE) or the `started` frame (WS) came. */
  readonly ready: boolean;
  close(): void;
}

/** Opens an SSE stream that stays quiet; resolves once its response headers arrive (or after `timeoutMs`, not ready). */
export function openIdleSse(target: Target, timeoutMs: number): Promise<IdleConnection> {
  return new Promise((resolve) => {
    const body = JSON.stringify({ model: target.model, stream: true, messages: [{ role: "user", content: "bench" }] });
    let call: ClientRequest | undefined;
    const connection = (ready: boolean): IdleConnection => ({ ready, close: () => call?.destroy() });
    const timer = setTimeout(() => resolve(connection(false)), timeoutMs);
    call = request(`${target.baseUrl}/v1/chat/completions`, {
      method: "POST",
      agent,
      headers: { "content-type": "application/json", accept: "text/event-stream", "content-length": Buffer.byteLength(body) },
    });
    call.on("error", () => {
      clearTimeout(timer);
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
export function openIdleWs(target: Target, timeoutMs: number): Promise<IdleConnection> {
  return new Promise((resolve) => {
    const socket = new WebSocket(`${target.baseUrl.replace(/^http/, "ws")}/v1/ws`, ["runnel.v1"], { perMessageDeflate: false });
    const connection = (ready: boolean): IdleConnection => ({ ready, close: () => socket.terminate() });
    let settled = false;
    const settle = (ready: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(connection(ready));
    };
    const timer = setTimeout(() => settle(false), timeoutMs);
    socket.on("open", () =>
      socket.send(JSON.stringify({ type: "request", id: 1, body: { model: target.model, messages: [{ role: "user", content: "bench" }] } })),
    );
    socket.on("message", (data) => {
      const text = String(data);
      if (text.startsWith('{"type":"started"') || text.includes('"type":"started"')) settle(true);
      else if (text.includes('"type":"error"')) settle(false);
    });
    socket.on("error", () => settle(false));
    socket.on("close", () => settle(false));
  });
}

/** Opens `count` connections, `batch` at a time. */
export async function openMany(count: number, batch: number, open: () => Promise<IdleConnection>): Promise<IdleConnection[]> {
  const connections: IdleConnection[] = [];
  for (let opened = 0; opened < count; opened += batch) {
    const size = Math.min(batch, count - opened);
    connections.push(...(await Promise.all(Array.from({ length: size }, open))));
  }
  return connections;
}
