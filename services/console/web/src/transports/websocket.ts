/**
 * WebSocket `/v1/ws` (subprotocol `runnel.v1`; a browser, which cannot set
 * headers on a WebSocket, sends the key as the subprotocol
 * `runnel.bearer.<key>`). A new stream is a `request` frame, a resume a
 * `resume` frame on a new socket; every `chunk` and `done` frame carries
 * the event's `seq`. Close 1012 is an ingress restarting: resume elsewhere.
 */
import { errorOf, type Usage } from "../chunks.js";
import type { Connection, StreamRef, Transport, TransportContext } from "./types.js";
import { requestBody } from "./types.js";

/** Characters of an HTTP token: a key outside them cannot be a subprotocol (browsers refuse it). */
const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

let requests = 0;

function socketUrl(base: string): string {
  return `${base.replace(/^http/, "ws")}/v1/ws`;
}

function open(context: TransportContext, first: (id: string) => Record<string, unknown>): Connection {
  if (context.key !== undefined && !HTTP_TOKEN.test(context.key)) {
    context.sink({
      type: "error",
      seq: undefined,
      error: { code: "console_key_not_a_token", message: "this API key has characters a WebSocket subprotocol cannot carry" },
    });
    return { drop() {} };
  }
  const protocols = ["runnel.v1", ...(context.key ? [`runnel.bearer.${context.key}`] : [])];
  const socket = new WebSocket(socketUrl(context.base), protocols);
  const id = `console-${++requests}`;
  let dropped = false;
  let ended = false;
  const sink: TransportContext["sink"] = (item) => {
    if (dropped || ended) return;
    if (item.type === "done" || item.type === "error" || item.type === "reconnect") ended = true;
    context.sink(item);
  };
  socket.onopen = () => socket.send(JSON.stringify(first(id)));
  socket.onmessage = (message) => {
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(String(message.data)) as Record<string, unknown>;
    } catch {
      return;
    }
    const seq = typeof frame.seq === "number" ? frame.seq : undefined;
    switch (frame.type) {
      case "started":
        sink({ type: "opened", streamId: String(frame.streamId), resumeToken: String(frame.resumeToken) });
        break;
      case "chunk":
        sink({ type: "chunk", seq, chunk: frame.chunk });
        break;
      case "done":
        sink({
          type: "done",
          seq,
          finishReason: typeof frame.finish_reason === "string" ? frame.finish_reason : undefined,
          usage: (frame.usage ?? undefined) as Usage | undefined,
        });
        socket.close(1000);
        break;
      case "error":
        sink({ type: "error", seq: undefined, error: errorOf(frame) ?? { code: "error", message: "" } });
        socket.close(1000);
        break;
    }
  };
  socket.onclose = (event) => {
    if (event.code === 1012) sink({ type: "reconnect", reason: "the ingress is restarting (close 1012)", retryMs: undefined });
    else sink({ type: "reconnect", reason: `the socket closed (${event.code}${event.reason ? ` ${event.reason}` : ""})`, retryMs: undefined });
  };
  return {
    drop() {
      dropped = true;
      socket.close(1000, "dropped by the console");
    },
  };
}

export const websocketTransport: Transport = {
  id: "websocket",
  label: "WebSocket",
  available: true,
  note: "GET /v1/ws (runnel.v1, key as runnel.bearer.<key>); resumes with a resume frame on a new socket",
  open(body, context) {
    return open(context, (id) => ({ type: "request", id, body: requestBody(body) }));
  },
  resume(stream: StreamRef, after, context) {
    return open(context, (id) => ({ type: "resume", id, streamId: stream.streamId, after, token: stream.resumeToken }));
  },
};
