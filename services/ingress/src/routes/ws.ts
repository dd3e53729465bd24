/**
 * `GET /v1/ws`: the WebSocket route. The upgrade is checked here, before
 * any switch of protocols (path, shutting down, the subprotocols, the API
 * key, from a header or the `runnel.bearer.<key>` subprotocol browsers
 * use), and refused with an HTTP answer in OpenAI's error shape; an accepted
 * socket is a Session (ws-session.ts) speaking the protocol of
 * ws-protocol.ts with the flow control of ws-flow-control.ts.
 *
 * The socket itself: no compression (`permessage-deflate` is never
 * negotiated), a frame may be up to `ingress.bodyLimitBytes` +
 * WS_ENVELOPE_BYTES (the `ws` library closes the socket with 1009 beyond),
 * and an ingress shutting down closes every socket with 1012.
 */
import { type IncomingMessage, STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { RunnelError } from "@runnel/shared/contracts";
import type { FastifyInstance } from "fastify";
import { WebSocketServer } from "ws";
import { httpError, openAIErrors } from "../http-errors.js";
import { SESSION_HEADER } from "../job.js";
import { WS_BEARER_PREFIX, WS_ENVELOPE_BYTES, WS_PATH, WS_PROTOCOL } from "../ws-protocol.js";
import { CLOSE_HANDSHAKE_MS, Session, type SocketHeaders } from "../ws-session.js";
import type { RouteContext } from "./context.js";

export function registerWebSocket(app: FastifyInstance, context: RouteContext): void {
  const server = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: context.options.bodyLimitBytes + WS_ENVELOPE_BYTES,
    clientTracking: false,
    handleProtocols: (protocols) => (protocols.has(WS_PROTOCOL) ? WS_PROTOCOL : false),
  });
  const sessions = new Set<Session>();

  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    let headers: SocketHeaders;
    try {
      const url = new URL(request.url ?? "/", "http://ingress");
      if (url.pathname !== WS_PATH) throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `no route GET ${url.pathname}`, { httpStatus: 404 });
      context.refuseIfClosing();
      headers = socketHeaders(request);
      context.auth.identify(headers);
    } catch (error) {
      refuseUpgrade(socket, httpError(error, context.options.bodyLimitBytes));
      return;
    }
    server.handleUpgrade(request, socket, head, (ws) => {
      const session = new Session(ws, headers, context, () => sessions.delete(session));
      sessions.add(session);
    });
  };

  app.addHook("onReady", async () => {
    app.server.on("upgrade", onUpgrade);
  });
  // Before the HTTP server closes: it would wait for upgraded sockets forever.
  app.addHook("preClose", async () => {
    app.server.off("upgrade", onUpgrade);
    for (const session of sessions) session.shutdown();
    const deadline = Date.now() + CLOSE_HANDSHAKE_MS + 500;
    while (sessions.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    for (const session of sessions) session.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
}

/**
 * The headers the socket's frames are read with: its key (a header, or the
 * bearer subprotocol, which must come beside `runnel.v1`) and its session
 * id. Throws RUNNEL_ERR_INVALID_REQUEST for subprotocols without runnel.v1.
 */
function socketHeaders(request: IncomingMessage): SocketHeaders {
  const offered = offeredProtocols(request.headers["sec-websocket-protocol"]);
  if (offered.length > 0 && !offered.includes(WS_PROTOCOL)) {
    throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `offer the ${WS_PROTOCOL} subprotocol (with ${WS_BEARER_PREFIX}<key> to authenticate)`, {
      param: "Sec-WebSocket-Protocol",
    });
  }
  const bearer = offered.find((protocol) => protocol.startsWith(WS_BEARER_PREFIX));
  return {
    authorization: bearer === undefined ? request.headers.authorization : `Bearer ${bearer.slice(WS_BEARER_PREFIX.length)}`,
    "x-api-key": request.headers["x-api-key"],
    [SESSION_HEADER]: request.headers[SESSION_HEADER],
  };
}

/** The subprotocols a client offered (`Sec-WebSocket-Protocol: a, b`). */
function offeredProtocols(header: string | string[] | undefined): string[] {
  const text = Array.isArray(header) ? header.join(",") : (header ?? "");
  return text
    .split(",")
    .map((protocol) => protocol.trim())
    .filter((protocol) => protocol.length > 0);
}

/** Answers an upgrade request with an HTTP error (OpenAI's error JSON) instead of switching protocols. */
function refuseUpgrade(socket: Duplex, error: RunnelError): void {
  const answer = openAIErrors(error);
  const body = JSON.stringify(answer.body);
  socket.on("error", () => socket.destroy());
  socket.once("finish", () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? "Error"}\r\n` +
      "Content-Type: application/json\r\n" +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      "Connection: close\r\n\r\n" +
      body,
  );
}
