/**
 * The mock provider's HTTP server (plain node:http): the chat routes of four
 * wire formats (OpenAI `/v1/chat/completions` and `/v1/responses`, Anthropic
 * `/v1/messages`, Gemini `/v1beta/models/{model}:streamGenerateContent|generateContent`), the
 * probes, and the routes tests use: the journal (`/_mock/requests`) and the
 * outage switches of `fail=outage` (`/_mock/outages/<key>`).
 */
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { ANTHROPIC_WIRE } from "./anthropic.js";
import { completeOnce, streamCompletion } from "./completion.js";
import { type Exchange, isAbort, markHeadersSent, send, sendError } from "./exchange.js";
import { INTERNAL_ERROR_REPLY } from "./failures.js";
import { GEMINI_WIRE } from "./gemini.js";
import { JOURNAL_LIMIT, JOURNAL_TEXT_LIMIT, Journal, type JournalEntry } from "./journal.js";
import { type ChatRequest, type CompletionHeader, errorBody, modelsBody } from "./openai.js";
import { OPENAI_RESPONSES_WIRE } from "./openai-responses.js";
import { parseScenario, type Scenario, type ScenarioDefaults, ScenarioError } from "./scenario.js";
import { type MockWire, OPENAI_WIRE, type RouteFacts, type WireError } from "./wire.js";

/** A log line the app emits: `msg` says what happened, the other fields give details. */
export interface LogLine {
  readonly level: "debug" | "error";
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** Options of `buildMockProvider`. */
export interface MockProviderOptions {
  /** Server-wide scenario defaults (a request's scenario overrides them). */
  readonly defaults?: Partial<ScenarioDefaults>;
  /** Receives one object per chat request once its connection or response has closed. */
  readonly log?: (line: LogLine) => void;
  /** Journal size; 1000 unless given. */
  readonly journalLimit?: number;
}

/** A built (not yet listening) mock provider. */
export interface MockProvider {
  readonly server: Server;
  readonly journal: Journal;
  /** Starts listening; resolves with the actual port (useful with port 0). */
  listen(port: number, host: string): Promise<number>;
  /** Stops listening and destroys every open connection (stalled ones included). */
  close(): Promise<void>;
  /** The keys of `fail=outage` whose outage is on (switched by `/_mock/outages/<key>`, or here in process). */
  readonly outages: Set<string>;
}

/** Largest request body accepted. */
export const MAX_BODY_BYTES = 10 * 1024 * 1024;

/** How many `fail=500-once` keys are remembered. */
const ONCE_KEYS_LIMIT = 10_000;
/** How many outages may be on at once. */
const OUTAGES_LIMIT = 10_000;
/** Longest key of an outage. */
const OUTAGE_KEY_MAX = 256;

interface AppState {
  readonly defaults: Partial<ScenarioDefaults>;
  readonly journal: Journal;
  readonly log: ((line: LogLine) => void) | undefined;
  /** Keys of `fail=500-once` that have had their 500. */
  readonly failedOnce: Set<string>;
  /** Keys of `fail=outage` whose outage is on. */
  readonly outages: Set<string>;
  readonly startedAt: number;
  nextId: number;
  closing: boolean;
}

/** Builds the mock provider. Call `listen` to serve. */
export function buildMockProvider(options: MockProviderOptions = {}): MockProvider {
  const journal = new Journal(options.journalLimit ?? JOURNAL_LIMIT);
  const state: AppState = {
    defaults: options.defaults ?? {},
    journal,
    log: options.log,
    failedOnce: new Set(),
    outages: new Set(),
    startedAt: Math.floor(Date.now() / 1000),
    nextId: 0,
    closing: false,
  };
  const server = createServer((request, response) => {
    handle(state, request, response).catch((error: unknown) => {
      state.log?.({ level: "error", msg: "request failed", error: error instanceof Error ? error.message : String(error) });
      if (!response.headersSent && !response.destroyed) {
        response.writeHead(500, { "content-type": "application/json" }).end(errorBody(INTERNAL_ERROR_REPLY.error));
      } else {
        response.destroy();
      }
    });
  });

  return {
    server,
    journal,
    outages: state.outages,
    listen: (port, host) =>
      new Promise((resolve, reject) => {
        const onError = (error: Error): void => reject(error);
        server.once("error", onError);
        server.listen(port, host, () => {
          server.off("error", onError);
          resolve((server.address() as AddressInfo).port);
        });
      }),
    close: () =>
      new Promise((resolve) => {
        state.closing = true;
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** `/v1beta/models/{model}:{method}`: Gemini puts the model and the call in the path. */
const GEMINI_PATH = /^\/v1beta\/models\/([^/:]+):(streamGenerateContent|generateContent)$/;

async function handle(state: AppState, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const url = request.url ?? "/";
  const path = url.split("?")[0] ?? "/";
  const method = request.method ?? "GET";
  if (path === "/v1/chat/completions") {
    if (method !== "POST") return methodNotAllowed(state, request, response, "POST");
    return handleChat(state, request, response, OPENAI_WIRE, {});
  }
  if (path === "/v1/messages") {
    if (method !== "POST") return methodNotAllowed(state, request, response, "POST");
    return handleChat(state, request, response, ANTHROPIC_WIRE, {});
  }
  if (path === "/v1/responses") {
    if (method !== "POST") return methodNotAllowed(state, request, response, "POST");
    return handleChat(state, request, response, OPENAI_RESPONSES_WIRE, {});
  }
  const gemini = GEMINI_PATH.exec(path);
  if (gemini) {
    if (method !== "POST") return methodNotAllowed(state, request, response, "POST");
    const stream = gemini[2] === "streamGenerateContent";
    if (stream && new URLSearchParams(url.slice(path.length + 1)).get("alt") !== "sse") {
      // The real API streams a JSON array without alt=sse; the mock speaks SSE only.
      const reply = GEMINI_WIRE.invalid("mock-provider: streamGenerateContent is served with alt=sse only", null);
      return send(createExchange(state, request, response, null), reply.status, reply.body, reply.headers);
    }
    return handleChat(state, request, response, GEMINI_WIRE, { model: decodeURIComponent(gemini[1] ?? ""), stream });
  }
  const exchange = createExchange(state, request, response, null);
  switch (path) {
    case "/v1/models":
      if (method !== "GET") return methodNotAllowed(state, request, response, "GET");
      return send(exchange, 200, modelsBody(state.startedAt));
    case "/healthz":
      return send(exchange, 200, JSON.stringify({ status: "ok" }));
    case "/readyz":
      return state.closing
        ? send(exchange, 503, JSON.stringify({ status: "not ready", reasons: ["closing"] }))
        : send(exchange, 200, JSON.stringify({ status: "ready" }));
    case "/_mock/requests":
      if (method === "GET") return send(exchange, 200, JSON.stringify({ requests: state.journal.entries() }));
      if (method === "DELETE") {
        state.journal.clear();
        response.writeHead(204).end();
        return;
      }
      return methodNotAllowed(state, request, response, "GET, DELETE");
    case "/_mock/outages":
      if (method === "GET") return send(exchange, 200, JSON.stringify({ outages: [...state.outages] }));
      if (method === "DELETE") {
        state.outages.clear();
        response.writeHead(204).end();
        return;
      }
      return methodNotAllowed(state, request, response, "GET, DELETE");
    default:
      if (path.startsWith(OUTAGES_PREFIX)) return switchOutage(state, exchange, method, path.slice(OUTAGES_PREFIX.length));
      return sendError(exchange, {
        status: 404,
        message: `Unknown request URL: ${method} ${path}.`,
        type: "invalid_request_error",
        param: null,
        code: "unknown_url",
      });
  }
}

const OUTAGES_PREFIX = "/_mock/outages/";

/**
 * `PUT /_mock/outages/<key>` starts the outage of `key`: every request with
 * `fail=outage&key=<key>` is answered as `fail=503` until `DELETE` ends it.
 * Both answer 204 and are idempotent.
 */
function switchOutage(state: AppState, exchange: Exchange, method: string, encodedKey: string): void {
  let key = "";
  try {
    // One path segment; a key with reserved characters comes URL-escaped, as in the model's query string.
    if (!encodedKey.includes("/")) key = decodeURIComponent(encodedKey);
  } catch {
    key = "";
  }
  if (key === "" || key.length > OUTAGE_KEY_MAX) {
    sendError(exchange, {
      status: 400,
      message: `An outage key is one URL-escaped path segment of 1 to ${OUTAGE_KEY_MAX} characters: /_mock/outages/<key>.`,
      type: "invalid_request_error",
      param: null,
      code: "invalid_outage_key",
    });
    return;
  }
  if (method === "PUT") {
    if (!state.outages.has(key) && state.outages.size >= OUTAGES_LIMIT) {
      sendError(exchange, {
        status: 409,
        message: `At most ${OUTAGES_LIMIT} outages can be on at once.`,
        type: "invalid_request_error",
        param: null,
        code: "too_many_outages",
      });
      return;
    }
    state.outages.add(key);
  } else if (method === "DELETE") {
    state.outages.delete(key);
  } else {
    methodNotAllowed(state, exchange.request, exchange.response, "PUT, DELETE");
    return;
  }
  exchange.response.writeHead(204).end();
}

function methodNotAllowed(state: AppState, request: IncomingMessage, response: ServerResponse, allow: string): void {
  const exchange = createExchange(state, request, response, null);
  sendError(
    exchange,
    {
      status: 405,
      message: `Method ${request.method ?? ""} is not allowed here (allowed: ${allow}).`,
      type: "invalid_request_error",
      param: null,
      code: "method_not_allowed",
    },
    { allow },
  );
}

/**
 * Wires the exchange to its connection: the signal aborts when the response
 * closes, and the journal learns whether the response finished or the peer
 * hung up first.
 */
function createExchange(state: AppState, request: IncomingMessage, response: ServerResponse, entry: JournalEntry | null): Exchange {
  const controller = new AbortController();
  let closedByServer = false;
  if (entry) {
    response.once("finish", () => {
      entry.finished = true;
      state.journal.changed(entry);
    });
  }
  response.once("close", () => {
    if (entry && !response.writableFinished && !closedByServer && !state.closing) {
      entry.clientClosed = true;
      entry.clientClosedAt = Date.now();
      state.journal.changed(entry);
    }
    controller.abort();
    if (entry) {
      state.log?.({
        level: "debug",
        msg: "chat request",
        id: entry.id,
        model: entry.model,
        fail: entry.fail,
        stream: entry.stream,
        status: entry.status,
        tokensSent: entry.tokensSent,
        finished: entry.finished,
        clientClosed: entry.clientClosed,
        durationMs: Date.now() - entry.receivedAt,
      });
    }
  });
  return {
    request,
    response,
    entry,
    journal: state.journal,
    signal: controller.signal,
    destroy(how) {
      closedByServer = true;
      const socket: Socket = request.socket;
      if (how === "reset") {
        socket.resetAndDestroy();
      } else {
        socket.end(() => socket.destroy());
      }
    },
  };
}

/** Reads the body as UTF-8 text; null when it exceeds `limit` bytes. */
async function readBody(request: IncomingMessage, limit: number): Promise<string | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > limit) return null;
    chunks.push(buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function handleChat(state: AppState, request: IncomingMessage, response: ServerResponse, wire: MockWire, route: RouteFacts): Promise<void> {
  state.nextId += 1;
  const credential = wire.credential(request.headers);
  const entry: JournalEntry = {
    id: `${wire.idPrefix}${state.nextId}`,
    format: wire.name,
    model: null,
    fail: null,
    stream: false,
    receivedAt: Date.now(),
    headersSentAt: null,
    status: null,
    tokensSent: 0,
    firstTokenAt: null,
    finished: false,
    clientClosed: false,
    clientClosedAt: null,
    authorization: credential !== undefined,
    credentialSha256: credential === undefined ? null : createHash("sha256").update(credential).digest("hex"),
    traceparent: typeof request.headers.traceparent === "string" ? request.headers.traceparent : null,
    bodyBytes: null,
    messages: [],
    messageDigests: [],
  };
  state.journal.add(entry);
  const exchange = createExchange(state, request, response, entry);
  const reply = (error: WireError) => send(exchange, error.status, error.body, error.headers);

  let text: string | null;
  try {
    text = await readBody(request, MAX_BODY_BYTES);
  } catch (error) {
    if (isAbort(exchange, error) || request.destroyed) return; // The peer went away mid-body; the close handler recorded it.
    throw error;
  }
  if (text === null) return reply(wire.tooLarge(`The request body exceeds ${MAX_BODY_BYTES} bytes.`));
  entry.bodyBytes = Buffer.byteLength(text);

  const parsed = wire.parse(text, route);
  if (!parsed.ok) return reply(parsed.error);
  const chat = parsed.request;
  entry.model = chat.model;
  entry.stream = chat.stream;
  entry.messages = chat.messages.map((message) => ({ role: message.role, text: message.text.slice(0, JOURNAL_TEXT_LIMIT) }));
  entry.messageDigests = chat.messages.map((message) => ({ length: message.text.length, sha256: createHash("sha256").update(message.text).digest("hex") }));
  state.journal.changed(entry);

  let scenario: Scenario;
  try {
    scenario = parseScenario(chat.model, state.defaults);
  } catch (error) {
    if (error instanceof ScenarioError) return reply(wire.invalid(error.message, "model"));
    throw error;
  }
  entry.fail = scenario.fail;
  state.journal.changed(entry);

  try {
    await answer(state, exchange, chat, scenario, wire);
  } catch (error) {
    if (isAbort(exchange, error)) return; // The connection closed; nothing more to write.
    throw error;
  }
}

async function answer(state: AppState, exchange: Exchange, chat: ChatRequest, scenario: Scenario, wire: MockWire): Promise<void> {
  const reply = (error: WireError) => send(exchange, error.status, error.body, error.headers);
  const header: CompletionHeader = { id: exchange.entry?.id ?? "mock", created: Math.floor(Date.now() / 1000), model: chat.model };
  switch (scenario.fail) {
    case "reset":
      return exchange.destroy("reset");
    case "no-response":
      return; // Never answer; the connection stays open until the peer or close() ends it.
    case "500-once": {
      const key = scenario.key ?? "";
      if (!state.failedOnce.has(key)) {
        remember(state.failedOnce, key);
        return reply(wire.internalError());
      }
      break;
    }
    case "no-prefill":
      if (chat.endsWithAssistant) return reply(wire.prefillRejected());
      break;
    case "outage":
      if (state.outages.has(scenario.key ?? "")) return reply(wire.failure({ ...scenario, fail: "503" }, chat) ?? wire.internalError());
      break;
    case "content-policy":
      if (wire.blockedPrompt) {
        const body = wire.blockedPrompt(header, chat, chat.stream);
        if (exchange.entry) exchange.entry.status = 200;
        if (!chat.stream) return send(exchange, 200, body);
        exchange.response.writeHead(200, { "content-type": wire.streamContentType, "cache-control": "no-cache" });
        markHeadersSent(exchange, 200);
        exchange.response.end(body);
        return;
      }
      return reply(wire.failure(scenario, chat) ?? wire.internalError());
    default: {
      const failure = wire.failure(scenario, chat);
      if (failure) return reply(failure);
    }
  }
  if (chat.stream) await streamCompletion(exchange, chat, scenario, header, wire);
  else await completeOnce(exchange, chat, scenario, header, wire);
}

function remember(keys: Set<string>, key: string): void {
  keys.add(key);
  if (keys.size > ONCE_KEYS_LIMIT) {
    const oldest = keys.values().next();
    if (!oldest.done) keys.delete(oldest.value);
  }
}
