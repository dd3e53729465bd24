/**
 * One attempt at a provider's SSE stream, shared by every adapter: the HTTP
 * request on the provider's pooled Agent, the answer's status, the timeouts,
 * the SSE parsing, and the honest end. What differs per provider (the URL,
 * the headers, the body, the error answer, and the mapping of each event)
 * comes in as an `SseExchange` with a fresh `StreamDecoder` per stream.
 */
import { type ContentPart, type EventBody, FinishReason, RunnelError, type Usage } from "@runnel/shared/contracts";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { request as httpRequest } from "undici";
import { type AgentPool, type ErrorDetail, errorFromStatus, errorFromTransport, ProviderError, readBounded, redactKey, Watchdog } from "./http.js";
import type { EventBatch, StreamCall } from "./types.js";

/** Where a decoder puts what it read from one SSE event. */
export interface DecoderSink {
  /** A text, reasoning or tool-call delta: forwarded at once. */
  token(event: EventBody): void;
  /** The latest usage; emitted once, just before `done`. */
  usage(usage: Usage): void;
  /** The provider said why it stopped; the stream may still carry usage or its end marker. */
  finish(reason: FinishReason): void;
  /** The provider's end marker ([DONE], message_stop): nothing more is read. */
  end(): void;
  /** The event was not valid for the wire format: skipped and counted. */
  malformed(reason: string): void;
  /** The provider reported an error inside the stream. */
  fail(error: RunnelError): void;
}

/** Maps one provider's SSE events onto the vocabulary. One instance per stream: it may keep state (block indexes, tool counts). */
export interface StreamDecoder {
  decode(event: EventSourceMessage, sink: DecoderSink): void;
}

/** The provider-specific half of one streaming request. */
export interface SseExchange {
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly body: string;
  /** Reads the provider's error answer (status and body text, at most 64 KiB). */
  readonly readError: (status: number, text: string) => ErrorDetail;
  readonly decoder: StreamDecoder;
}

export interface SseStreamOptions {
  readonly agents: AgentPool;
  /** Called for each event that failed validation and was skipped. */
  readonly onMalformedChunk?: (reason: string) => void;
}

/** After the end marker, how long the rest of the body may take to arrive, so the connection can go back to the pool. */
const DRAIN_AFTER_END_MS = 1_000;
/** After a finish reason without an end marker, how long usage or the end of the body may take before the stream completes anyway. */
const TAIL_AFTER_FINISH_MS = 1_000;
const STREAM_DECODE = { stream: true } as const;

/**
 * Runs one attempt and yields its events, a batch per read of the body:
 * `started` once the provider answered 2xx, then what each read carried,
 * then usage and `done`. Throws a RunnelError (a ProviderError when the
 * provider or the network failed) instead of ending without `done`. The body
 * is read only as the consumer pulls.
 */
export async function* runSseStream(call: StreamCall, options: SseStreamOptions, exchange: SseExchange): AsyncGenerator<EventBatch, void, undefined> {
  const { provider } = call;
  const controller = new AbortController();
  const abort = () => controller.abort(call.signal.reason);
  if (call.signal.aborted) abort();
  else call.signal.addEventListener("abort", abort, { once: true });
  const timeouts = provider.timeouts;
  const watchdog = new Watchdog(controller, timeouts?.firstTokenMs ?? 0, timeouts?.idleMs ?? 0);
  const total = timeouts?.totalMs
    ? setTimeout(() => controller.abort(new RunnelError("RUNNEL_ERR_PROVIDER_TIMEOUT", `stream exceeded ${timeouts.totalMs} ms`)), timeouts.totalMs)
    : undefined;
  const failure = () => (controller.signal.reason instanceof RunnelError ? controller.signal.reason : undefined);
  let waiting = false;
  try {
    let response: Awaited<ReturnType<typeof httpRequest>>;
    const pending = httpRequest(exchange.url, {
      method: "POST",
      headers: provider.propagateTrace && call.traceHeaders ? { ...exchange.headers, ...call.traceHeaders } : exchange.headers,
      body: exchange.body,
      dispatcher: options.agents.get(provider),
      signal: controller.signal,
    });
    try {
      response = await Promise.race([pending, aborted(controller.signal)]);
    } catch (error) {
      // undici applies an abort only once the request has a connection: while
      // connecting it would wait for the connect to end (or time out). The
      // attempt ends here at once; undici never sends the aborted request, and
      // the handshake in flight joins the pool or ends at the connect timeout.
      pending.then((late) => late.body.destroy()).catch(() => {});
      throw failure() ?? errorFromTransport(error, "connect");
    }
    if (response.statusCode < 200 || response.statusCode > 299) {
      const text = await readBounded(response.body).catch(() => "");
      const detail = exchange.readError(response.statusCode, text);
      const retryAfter = response.headers["retry-after"];
      throw errorFromStatus(
        response.statusCode,
        { ...detail, message: redactKey(detail.message, provider.apiKey) },
        typeof retryAfter === "string" ? retryAfter : undefined,
      );
    }
    yield [{ $case: "started", value: { provider: provider.name, model: call.model, attempt: 1 } }];
    waiting = true;
    call.onWaiting?.(true);
    const stopWaiting = () => {
      if (!waiting) return;
      waiting = false;
      call.onWaiting?.(false);
    };
    try {
      yield* readStream(response.body, call, watchdog, exchange.decoder, options.onMalformedChunk, stopWaiting);
    } catch (error) {
      throw failure() ?? errorFromTransport(error, "stream");
    }
  } finally {
    if (waiting) call.onWaiting?.(false);
    watchdog.stop();
    if (total) clearTimeout(total);
    call.signal.removeEventListener("abort", abort);
    if (!controller.signal.aborted) controller.abort();
  }
}

/** Reads the SSE body and maps each event, yielding what each read carried. Returns only after an honest end. */
async function* readStream(
  body: AsyncIterable<Uint8Array>,
  call: StreamCall,
  watchdog: Watchdog,
  decoder: StreamDecoder,
  onMalformed: ((reason: string) => void) | undefined,
  onFirstToken: () => void,
): AsyncGenerator<EventBatch, void, undefined> {
  let finish: FinishReason | undefined;
  let ended = false;
  let sawToken = false;
  let events = 0;
  let malformedEvents = 0;
  let pendingUsage: Usage | undefined;
  let streamError: RunnelError | undefined;
  /** What the current read carried. */
  let batch: EventBody[] = [];
  const apiKey = call.provider.apiKey;
  const sink: DecoderSink = {
    token(event) {
      if (!sawToken) {
        sawToken = true;
        watchdog.touch();
        onFirstToken();
      }
      batch.push(event);
    },
    usage(usage) {
      pendingUsage = usage;
    },
    finish(reason) {
      finish = reason;
    },
    end() {
      ended = true;
      // The end marker carries nothing: a stream of malformed events and a marker is still all malformed.
      events -= 1;
    },
    malformed(reason) {
      malformedEvents += 1;
      onMalformed?.(reason);
      if (call.provider.failOnMalformedChunk) {
        streamError ??= new RunnelError("RUNNEL_ERR_PROVIDER_BAD_RESPONSE", `the provider sent a chunk that is not valid for its wire format (${reason})`);
      }
    },
    fail(error) {
      streamError ??= redactKey(error.message, apiKey) === error.message ? error : rewrap(error, redactKey(error.message, apiKey));
    },
  };
  const parser = createParser({
    onEvent(event) {
      if (ended || streamError) return;
      if (sawToken) watchdog.touch();
      events += 1;
      decoder.decode(event, sink);
    },
  });
  const decoder8 = new TextDecoder();
  const chunks = body[Symbol.asyncIterator]();
  let tail: Promise<"tail"> | undefined;
  let tailTimer: NodeJS.Timeout | undefined;
  try {
    for (;;) {
      let next: IteratorResult<Uint8Array> | "tail";
      if (finish === undefined) next = await chunks.next();
      else {
        // A finish reason without an end marker yet: usage or the body's end
        // usually follows at once; a server that keeps the connection open
        // does not hold the answer back for long.
        tail ??= new Promise((resolve) => {
          tailTimer = setTimeout(() => resolve("tail"), TAIL_AFTER_FINISH_MS);
        });
        next = await Promise.race([chunks.next(), tail]);
        if (next === "tail") break;
      }
      if (next.done) break;
      parser.feed(decoder8.decode(next.value, STREAM_DECODE));
      if (batch.length > 0) {
        const read = batch;
        batch = [];
        // Suspended here until the consumer pulls (the bus is behind: the provider's socket buffers meanwhile).
        yield read;
      }
      // What the read carried before an error in it went out first, as it came.
      if (streamError) throw streamError;
      if (ended) break;
    }
  } finally {
    clearTimeout(tailTimer);
  }
  if (streamError) throw streamError;
  if (malformedEvents > 0 && malformedEvents === events) {
    throw new ProviderError("RUNNEL_ERR_PROVIDER_BAD_RESPONSE", `none of the provider's ${malformedEvents} events was valid`, { retry: false });
  }
  // Either terminator is an honest end: a finish reason without the end
  // marker is a quirk of several servers, the marker without a finish reason of others.
  if (finish === undefined) {
    if (!ended) {
      throw new ProviderError("RUNNEL_ERR_PROVIDER_STREAM_CUT", "provider stream ended without a finish reason or end marker", { retry: true });
    }
    finish = FinishReason.FINISH_REASON_STOP;
  }
  const last: EventBody[] = pendingUsage ? [{ $case: "usage", value: pendingUsage }] : [];
  last.push({ $case: "done", value: { finishReason: finish } });
  yield last;
  // The client has its answer; read the end of the body (usually already
  // here) so the keep-alive connection returns to the pool instead of being
  // destroyed. A server that keeps it open past the limit loses it.
  if (ended) await drain(chunks, DRAIN_AFTER_END_MS);
}

/** Rejects with the signal's reason when it aborts (never resolves). */
function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_resolve, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

function rewrap(error: RunnelError, message: string): RunnelError {
  if (error instanceof ProviderError) {
    return new ProviderError(error.code, message, { retry: error.retry, retryAfterMs: error.retryAfterMs, status: error.status });
  }
  return new RunnelError(error.code, message);
}

async function drain(chunks: AsyncIterator<Uint8Array>, limitMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const rest = (async () => {
    for (;;) if ((await chunks.next()).done) return;
  })();
  rest.catch(() => {});
  await Promise.race([rest, new Promise<void>((resolve) => (timer = setTimeout(resolve, limitMs)))]);
  clearTimeout(timer);
}

/** Joins a base URL and a path with exactly one slash. */
export function joinUrl(baseUrl: string, path: string): string {
  return `${baseUrl.replace(/\/+$/, "")}/${path.replace(/^\/+/, "")}`;
}

/** Parses one SSE event's data as JSON; a malformed one is reported to the sink and gives undefined. */
export function parseJson(data: string, sink: DecoderSink): unknown {
  try {
    return JSON.parse(data);
  } catch {
    sink.malformed("not JSON");
    return undefined;
  }
}

/** Validates a parsed chunk with its schema; an invalid one is reported to the sink and gives undefined. */
export function validChunk<T>(
  schema: { safeParse(value: unknown): { success: true; data: T } | { success: false; error: { issues: { message: string }[] } } },
  json: unknown,
  sink: DecoderSink,
): T | undefined {
  const parsed = schema.safeParse(json);
  if (parsed.success) return parsed.data;
  sink.malformed(parsed.error.issues[0]?.message ?? "schema");
  return undefined;
}

/** The text parts of a message, concatenated. */
export function textOf(parts: readonly ContentPart[]): string {
  let text = "";
  for (const part of parts) if (part.part?.$case === "text") text += part.part.value;
  return text;
}
