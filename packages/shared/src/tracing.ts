/**
 * Trace context across Runnel's hops, on the OpenTelemetry API only: with no
 * SDK registered (tracing not configured) every call here is a no-op on
 * non-recording spans, so the services call it unconditionally.
 *
 * gRPC carries context in its metadata (the gRPC instrumentation, started by
 * tracing-sdk.ts); NATS does not, so this module is the small wrapper that
 * does: inject on publish (message headers, or the job's `trace_context`
 * map), extract on consume, and run the handler in the extracted context.
 * Span names and attributes follow the messaging semantic conventions:
 * `{operation} {destination}`, where the destination of a per-stream or
 * per-worker subject is its template (`runnel.ctl.cancel.{worker_id}`), so
 * span names stay few whatever the number of streams.
 */
import { type MsgHdrs, headers as natsHeaders } from "@nats-io/nats-core";
import {
  type Attributes,
  type Context,
  context,
  type Exception,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { getRPCMetadata, RPCType } from "@opentelemetry/core";
import type { Logger } from "./logger.js";

/** The instrumentation scope of every span Runnel itself creates. */
export const TRACER_NAME = "runnel";

/** Runnel's tracer (a proxy until an SDK registers, so it may be taken at any time). */
export function tracer(): Tracer {
  return trace.getTracer(TRACER_NAME);
}

/** Attribute keys Runnel adds beside the semantic conventions. */
export const RunnelAttributes = {
  STREAM_ID: "runnel.stream.id",
  MODEL: "runnel.model",
  OUTCOME: "runnel.stream.outcome",
  TRANSPORT: "runnel.transport",
} as const;

const recordSetter: TextMapSetter<Record<string, string>> = {
  set(carrier, key, value) {
    carrier[key] = value;
  },
};

const recordGetter: TextMapGetter<Readonly<Record<string, string>>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

const headerGetter: TextMapGetter<MsgHdrs> = {
  keys: (carrier) => carrier.keys(),
  // MsgHdrs answers "" for a missing key; the propagator wants undefined.
  get: (carrier, key) => carrier.get(key) || undefined,
};

/** W3C trace context of `from` (the active context by default) as a plain map: what the job's `trace_context` carries. */
export function traceContextMap(from: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(from, carrier, recordSetter);
  return carrier;
}

/** NATS headers carrying the trace context of `from`; undefined when there is none to carry (tracing off), so no header block is sent. */
export function traceHeaders(from: Context = context.active()): MsgHdrs | undefined {
  const carried = traceContextMap(from);
  const keys = Object.keys(carried);
  if (keys.length === 0) return undefined;
  const carrier = natsHeaders();
  for (const key of keys) carrier.set(key, carried[key] as string);
  return carrier;
}

/** The context a message or job carries (ROOT when it carries none). */
export function extractContext(carrier: MsgHdrs | Readonly<Record<string, string>> | undefined): Context {
  if (!carrier) return ROOT_CONTEXT;
  if (isHeaders(carrier)) return propagation.extract(ROOT_CONTEXT, carrier, headerGetter);
  return propagation.extract(ROOT_CONTEXT, carrier, recordGetter);
}

function isHeaders(carrier: MsgHdrs | Readonly<Record<string, string>>): carrier is MsgHdrs {
  return typeof (carrier as MsgHdrs).keys === "function" && typeof (carrier as MsgHdrs).get === "function";
}

/** Where a NATS message goes, for the messaging attributes. */
export interface Destination {
  /** The concrete subject. */
  readonly subject: string;
  /** Its template when the subject embeds an id (`runnel.ctl.cancel.{worker_id}`); also the span name's destination. */
  readonly template?: string;
  /** The JetStream consumer (group) that delivers it, on the consumer side. */
  readonly consumerGroup?: string;
  readonly messageId?: string;
  readonly bodySize?: number;
}

function messagingAttributes(destination: Destination, operation: "publish" | "process", extra: Attributes | undefined): Attributes {
  return {
    "messaging.system": "nats",
    "messaging.operation.name": operation,
    "messaging.operation.type": operation === "publish" ? "send" : "process",
    "messaging.destination.name": destination.subject,
    ...(destination.template ? { "messaging.destination.template": destination.template } : {}),
    ...(destination.consumerGroup ? { "messaging.consumer.group.name": destination.consumerGroup } : {}),
    ...(destination.messageId ? { "messaging.message.id": destination.messageId } : {}),
    ...(destination.bodySize !== undefined ? { "messaging.message.body.size": destination.bodySize } : {}),
    ...extra,
  };
}

/**
 * A producer span for one publish, child of the active context. Inject the
 * returned context into the message (`traceHeaders(context)` or
 * `traceContextMap(context)`); end the span once the publish is done.
 */
export function startPublishSpan(destination: Destination, attributes?: Attributes): { span: Span; context: Context } {
  const parent = context.active();
  const span = tracer().startSpan(
    `publish ${destination.template ?? destination.subject}`,
    { kind: SpanKind.PRODUCER, attributes: messagingAttributes(destination, "publish", attributes) },
    parent,
  );
  return { span, context: trace.setSpan(parent, span) };
}

/**
 * A consumer span for processing one message, child of the context the
 * message carried. Run the handler with `context.with(result.context, ...)`.
 */
export function startProcessSpan(destination: Destination, carried: Context, attributes?: Attributes): { span: Span; context: Context } {
  const span = tracer().startSpan(
    `process ${destination.template ?? destination.subject}`,
    { kind: SpanKind.CONSUMER, attributes: messagingAttributes(destination, "process", attributes) },
    carried,
  );
  return { span, context: trace.setSpan(carried, span) };
}

/** Runs `handler` in a consumer span for a message carrying `carrier`, ending the span when it returns or throws. */
export function processMessage<T>(destination: Destination, carrier: MsgHdrs | undefined, handler: () => T, attributes?: Attributes): T {
  const { span, context: processing } = startProcessSpan(destination, extractContext(carrier), attributes);
  try {
    return context.with(processing, handler);
  } catch (error) {
    recordFailure(span, error);
    throw error;
  } finally {
    span.end();
  }
}

/** Marks a span failed the semantic-conventions way: exception event, error status, `error.type` (the RUNNEL_ERR_* code when there is one). */
export function recordFailure(span: Span, error: unknown, type?: string): void {
  if (!span.isRecording()) return;
  const code = type ?? (error && typeof error === "object" && "code" in error && typeof error.code === "string" ? error.code : undefined);
  const name = error instanceof Error ? error.name : "Error";
  span.recordException(error instanceof Error ? (error as Exception) : String(error));
  span.setAttribute("error.type", code ?? name);
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
}

/**
 * Names the active HTTP server span by its route (`POST /v1/chat/completions`,
 * `GET /v1/streams/:id/events`) and sets `http.route`: the HTTP
 * instrumentation reads it when the response ends. A no-op without tracing.
 */
export function setHttpRoute(route: string | undefined): void {
  if (!route) return;
  const metadata = getRPCMetadata(context.active());
  if (metadata?.type === RPCType.HTTP) metadata.route = route;
}

/** The active span, if it still records (a span that ended, or no span at all, takes no events). */
export function recordingSpan(from: Context = context.active()): Span | undefined {
  const span = trace.getSpan(from);
  return span?.isRecording() ? span : undefined;
}

/** `trace_id` and `span_id` of the active span, for log lines (an empty object when there is none). */
export function activeTraceIds(): Record<string, string> {
  // A fresh object every time: pino merges the line's own fields into it.
  const span = trace.getSpan(context.active());
  if (!span) return {};
  const { traceId, spanId } = span.spanContext();
  if (!trace.isSpanContextValid(span.spanContext())) return {};
  return { trace_id: traceId, span_id: spanId };
}

type Flush = () => Promise<void>;
const flushers: Flush[] = [];
let sdkStarted = false;

/** Called by the tracing preload once the SDK runs; `flush` must run before the process exits (it exports buffered spans). */
export function tracingSdkStarted(flush: Flush): void {
  sdkStarted = true;
  flushers.push(flush);
}

/** Logs whether this process traces; warns when OTEL_* ask for traces but the preload was not loaded (`--import .../instrument.js`). */
export function reportTracing(log: Logger, configured: boolean): void {
  if (sdkStarted) log.info("tracing on: spans are exported as the OTEL_* variables say");
  else if (configured)
    log.warn(
      "OTEL_* configure a trace exporter, but this process was started without its telemetry preload (node --import <service>/dist/instrument.js): no traces",
    );
}

/** Flushes buffered telemetry, for at most `timeoutMs`; never throws. */
export async function flushTelemetry(timeoutMs = 5_000): Promise<void> {
  if (flushers.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled(flushers.map((flush) => flush())),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}
