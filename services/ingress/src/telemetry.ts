/**
 * The ingress's telemetry: what happens to streams at the edge, as metrics
 * and as events on the request's server span. Everything is recorded per
 * stream (opened, first byte, ended), per resume or per slow-client episode,
 * never per token.
 *
 * The latency Runnel adds before the first token is measured in two halves,
 * each on one clock: here, from publishing the job to writing the first event
 * to the client (`runnel.ingress.time_to_first_byte`); at the worker, from
 * sending the provider request to its first token
 * (`gen_ai.client.operation.time_to_first_chunk`). docs/observability.md
 * explains how the dashboard subtracts them and where the exact per-stream
 * figure is (the trace).
 */
import type { Span } from "@opentelemetry/api";
import { JOBS_SUBJECT } from "@runnel/shared/contracts";
import { Buckets, type Meter, RunnelAttributes, recordingSpan } from "@runnel/shared/runtime";

/** How a client reads a stream. */
export type Transport = "sse" | "ndjson" | "json" | "websocket";

/** How a client came back to a stream. */
export type ResumeVia = "sse" | "deltas" | "websocket";

export class IngressTelemetry {
  readonly #active;
  readonly #opened;
  readonly #timeToFirstByte;
  readonly #publishDuration;
  readonly #resumes;
  readonly #slowClients;
  readonly #cancels;

  constructor(meter: Meter) {
    this.#active = meter.createUpDownCounter("runnel.ingress.streams.active", {
      description: "Streams being written to a client on this ingress, by transport.",
    });
    this.#opened = meter.createCounter("runnel.ingress.streams.opened", {
      description: "Responses that started writing a stream (new or resumed), by transport.",
    });
    this.#timeToFirstByte = meter.createHistogram("runnel.ingress.time_to_first_byte", {
      unit: "s",
      description: "From publishing a new stream's job to writing its first event to the client.",
      advice: { explicitBucketBoundaries: [...Buckets.latency] },
    });
    this.#publishDuration = meter.createHistogram("messaging.client.operation.duration", {
      unit: "s",
      description: "Publishing a job to the JetStream work queue, until JetStream acknowledged it.",
      advice: { explicitBucketBoundaries: [...Buckets.overhead] },
    });
    this.#resumes = meter.createCounter("runnel.ingress.resumes", {
      description: "Clients reading a stream again from a position (SSE resume, polling, WebSocket resume).",
    });
    this.#slowClients = meter.createCounter("runnel.ingress.slow_client.events", {
      description: "Slow clients: paused (the socket buffer filled; the rest comes from the log) or cut (read nothing for ingress.stuckClientTimeout).",
    });
    this.#cancels = meter.createCounter("runnel.ingress.cancels", {
      description: "Cancels the ingress asked for, by path: through the control plane, or directly when no replica answered.",
    });
  }

  /** A response started writing a stream; call the returned function (idempotent) when it ends. */
  streamOpened(transport: Transport): () => void {
    const attributes = { [RunnelAttributes.TRANSPORT]: transport };
    this.#opened.add(1, attributes);
    this.#active.add(1, attributes);
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      this.#active.add(-1, attributes);
    };
  }

  /** A job was published for a new stream (`seconds` until JetStream acknowledged it, or the failure). */
  jobPublished(seconds: number, errorType?: string): void {
    this.#publishDuration.record(seconds, {
      "messaging.system": "nats",
      "messaging.operation.name": "publish",
      "messaging.destination.name": JOBS_SUBJECT,
      ...(errorType ? { "error.type": errorType } : {}),
    });
  }

  /** The first event of a new stream reached its client, `seconds` after its job was published; noted on the request's span too. */
  firstByte(seconds: number, requestSpan: Span | undefined): void {
    this.#timeToFirstByte.record(seconds);
    if (requestSpan?.isRecording()) requestSpan.addEvent("runnel.first_byte", { "runnel.time_to_first_byte": seconds });
  }

  /** A client reads a stream again (an event on the active request's span). */
  resumed(streamId: string, after: number, via: ResumeVia): void {
    this.#resumes.add(1, { "runnel.resume.via": via });
    recordingSpan()?.addEvent("runnel.resume", { [RunnelAttributes.STREAM_ID]: streamId, "runnel.resume.after": after, "runnel.resume.via": via });
  }

  slowClient(transport: Transport, kind: "paused" | "cut"): void {
    this.#slowClients.add(1, { [RunnelAttributes.TRANSPORT]: transport, "runnel.slow_client.kind": kind });
  }

  /** The ingress asked for a cancel (an event on the active span, when one still records). */
  cancelled(streamId: string, reason: string, path: "control_plane" | "direct" | "failed"): void {
    this.#cancels.add(1, { "runnel.cancel.path": path });
    recordingSpan()?.addEvent("runnel.cancel", { [RunnelAttributes.STREAM_ID]: streamId, "runnel.cancel.reason": reason, "runnel.cancel.path": path });
  }
}
