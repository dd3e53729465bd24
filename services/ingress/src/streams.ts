/**
 * The ingress's streams, whatever the transport: submitting a job, reading a
 * stream from a position, cancelling, the detach grace, ownership checks,
 * and the watch that ends streams whose worker is gone. Transports (HTTP
 * routes, WebSocket) call this; they only frame events.
 */
import { context } from "@opentelemetry/api";
import {
  ATTACHED_SUBJECTS,
  attachedSubject,
  isTerminal,
  isTerminalPhase,
  JOBS_SUBJECT,
  type Job,
  type RunnelConfig,
  RunnelError,
  type StoredRecord,
  type StreamEvent,
} from "@runnel/shared/contracts";
import {
  type Bus,
  type ControlPlaneLink,
  cancelStream,
  deleteRequest,
  EventLog,
  encodeJobForQueue,
  type Logger,
  noopMeter,
  RunnelAttributes,
  recordFailure,
  recordingSpan,
  type StreamRecords,
  startPublishSpan,
  traceContextMap,
} from "@runnel/shared/runtime";
import type { Auth } from "./auth.js";
import { judgeQuietStream, type StallPolicy } from "./stall-watch.js";
import { StreamHub } from "./stream-hub.js";
import { StreamReader } from "./stream-reader.js";
import { IngressTelemetry, type ResumeVia } from "./telemetry.js";

/** Subject on which an ingress says a stream has a reader again (ends other replicas' detach timers). */

export interface StreamServiceDeps {
  readonly bus: Bus;
  readonly records: StreamRecords;
  readonly link: ControlPlaneLink;
  readonly log: Logger;
  readonly auth: Auth;
  readonly options: Readonly<RunnelConfig["ingress"]>;
  readonly busOptions: Readonly<RunnelConfig["bus"]>;
  /** Stream metrics and span events; absent: recorded nowhere. */
  readonly telemetry?: IngressTelemetry;
}

interface Watched {
  readonly reader: StreamReader;
  readonly openedAtMs: number;
  seen: number;
  quietSince: number;
  checking: boolean;
  /** Sent back to the log once already because its stream ended unseen. */
  caughtUp: boolean;
}

export class StreamService {
  readonly hub: StreamHub;
  readonly eventLog: EventLog;
  readonly #deps: StreamServiceDeps;
  readonly #watched = new Set<Watched>();
  readonly #detached = new Map<string, NodeJS.Timeout>();
  readonly #attachedSubscription: ReturnType<Bus["nc"]["subscribe"]>;
  readonly #stallTimer: NodeJS.Timeout;
  readonly #stallPolicy: StallPolicy;
  readonly #telemetry: IngressTelemetry;

  constructor(deps: StreamServiceDeps) {
    this.#deps = deps;
    this.#telemetry = deps.telemetry ?? new IngressTelemetry(noopMeter());
    this.hub = new StreamHub(deps.bus.nc);
    this.eventLog = new EventLog(deps.bus);
    this.#attachedSubscription = deps.bus.nc.subscribe(ATTACHED_SUBJECTS, {
      callback: (error, message) => {
        if (error) return;
        this.#clearDetach(message.subject.slice(ATTACHED_SUBJECTS.length - 1));
      },
    });
    this.#stallPolicy = {
      quietMs: Math.max(deps.options.heartbeatInterval * 2, 1_000),
      jobMaxAgeMs: deps.busOptions.jobMaxAge + 5_000,
      // Workers refresh a running stream's record every third of the ack deadline.
      workerLostMs: deps.busOptions.jobAckWait * 2,
    };
    this.#stallTimer = setInterval(() => this.#checkQuietStreams(), Math.min(5_000, this.#stallPolicy.quietMs / 2));
    this.#stallTimer.unref();
  }

  /**
   * Opens a new stream: joins its live feed first (so no event can be
   * missed), then submits the job. The returned reader starts at seq 1.
   */
  async open(job: Job): Promise<StreamReader> {
    // The request's server span (when tracing): named by the stream, and told when the first byte goes out.
    const requestSpan = recordingSpan();
    requestSpan?.setAttribute(RunnelAttributes.STREAM_ID, job.streamId);
    const reader = this.reader(job.streamId, 0, false);
    // The job carries the producer span's context in its trace_context: the worker continues this trace.
    const { span, context: publishing } = startPublishSpan(
      { subject: JOBS_SUBJECT, messageId: job.streamId },
      { [RunnelAttributes.STREAM_ID]: job.streamId, [RunnelAttributes.MODEL]: job.model },
    );
    const { bus } = this.#deps;
    const publishedAt = performance.now();
    reader.onFirstEvent(() => this.#telemetry.firstByte((performance.now() - publishedAt) / 1000, requestSpan));
    let stored: boolean | undefined;
    try {
      // A request too large for one NATS message goes to the object store first; the job then carries its name.
      // Tracing: the job carries the publish span's context. Not tracing: whatever the client sent, as it came.
      const carried = traceContextMap(publishing);
      const queued = await encodeJobForQueue(bus, { ...job, traceContext: Object.keys(carried).length > 0 ? carried : job.traceContext });
      stored = queued.stored;
      span.setAttribute("messaging.message.body.size", queued.data.length);
      await context.with(publishing, () => bus.js.publish(JOBS_SUBJECT, queued.data, { msgID: job.streamId, timeout: 5_000 }));
      this.#telemetry.jobPublished((performance.now() - publishedAt) / 1000);
    } catch (error) {
      recordFailure(span, error, "RUNNEL_ERR_OVERLOADED");
      this.#telemetry.jobPublished((performance.now() - publishedAt) / 1000, "RUNNEL_ERR_OVERLOADED");
      reader.close();
      // No worker will run the job (the cancel below stops one queued after all), so no one needs its body.
      if (stored) deleteRequest(bus, job.streamId).catch(() => {});
      // A timed-out publish may still have been stored: record a cancel so no worker ever starts it.
      void this.cancel(job.streamId, "the job could not be queued");
      const what = stored === undefined ? "the request body could not be stored for the job" : "the job could not be queued";
      throw new RunnelError("RUNNEL_ERR_OVERLOADED", what, { cause: error });
    } finally {
      span.end();
    }
    return reader;
  }

  /**
   * A reader of a stream from `after`, watched for a lost worker until it
   * ends. `onSkippedRoute` is told the route events before `after` (see
   * ReaderOptions), for a resumed client's chunks to name the serving model.
   */
  reader(streamId: string, after: number, fromLog: boolean, onSkippedRoute?: (event: StreamEvent) => void): StreamReader {
    const reader = new StreamReader({
      hub: this.hub,
      log: this.eventLog,
      streamId,
      after,
      fromLog,
      bufferEvents: this.#deps.options.readerBufferEvents,
      onLogError: (error) => this.#deps.log.warn({ stream_id: streamId, err: error }, "reading the event log failed; retrying"),
      ...(onSkippedRoute ? { onSkippedRoute } : {}),
    });
    const now = Date.now();
    this.#watched.add({ reader, openedAtMs: now, seen: -1, quietSince: now, checking: false, caughtUp: false });
    return reader;
  }

  /** A reader of a stream read again from `after` (a resume, a poll): from the log, then live; attached (below). */
  resume(streamId: string, after: number, via: ResumeVia, onSkippedRoute?: (event: StreamEvent) => void): StreamReader {
    const reader = this.reader(streamId, after, true, onSkippedRoute);
    this.attached(streamId, after, via);
    return reader;
  }

  /** A client reads the stream again from `after`: no pending detach may cancel it, on any replica. */
  attached(streamId: string, after = 0, via: ResumeVia = "sse"): void {
    this.#telemetry.resumed(streamId, after, via);
    this.#clearDetach(streamId);
    this.#deps.bus.nc.publish(attachedSubject(streamId));
  }

  /**
   * The client went away before the stream ended. A disconnect keeps the
   * generation running for the detach grace, so the client can resume; any
   * other reason (too slow, shutdown, explicit) cancels at once.
   */
  abandoned(streamId: string, reason: string, detach: boolean): void {
    const grace = this.#deps.options.detachGrace;
    if (!detach || grace === 0) {
      this.cancel(streamId, reason);
      return;
    }
    this.#clearDetach(streamId);
    const timer = setTimeout(() => {
      this.#detached.delete(streamId);
      // Still being read here (a resumed client on this replica)? Then it is not abandoned.
      if (this.hub.listeners(streamId) > 0) return;
      this.cancel(streamId, `${reason}; not resumed within ${grace} ms`);
    }, grace);
    timer.unref();
    this.#detached.set(streamId, timer);
  }

  /** Cancels through the control plane; if no replica answers, runs the same steps here. */
  cancel(streamId: string, reason: string): Promise<void> {
    const { link, records, bus, log } = this.#deps;
    return link.cancel(streamId, reason, 2_000).then(
      () => {
        this.#telemetry.cancelled(streamId, reason, "control_plane");
        log.info({ stream_id: streamId, reason }, "stream cancelled");
      },
      async (error: unknown) => {
        log.warn({ stream_id: streamId, err: (error as Error).message }, "control plane did not take the cancel; cancelling directly");
        await cancelStream(records, bus.nc, streamId, reason).then(
          () => this.#telemetry.cancelled(streamId, reason, "direct"),
          (fallbackError: unknown) => {
            this.#telemetry.cancelled(streamId, reason, "failed");
            log.error({ stream_id: streamId, err: fallbackError }, "cancel failed");
          },
        );
      },
    );
  }

  /**
   * The seq a stream ended at, if it ended: from its record, or from the
   * log's last event when the record is not final yet (the worker writes
   * the record just after publishing the terminal event). Undefined while
   * it runs.
   */
  async endedAt(streamId: string, record: StoredRecord | undefined): Promise<number | undefined> {
    if (record && isTerminalPhase(record.state.phase) && record.state.lastSeq > 0) return record.state.lastSeq;
    const last = await this.eventLog.last(streamId);
    return last && isTerminal(last) ? last.seq : undefined;
  }

  /** The stream's record, if a worker has taken it (or it was cancelled). */
  record(streamId: string): Promise<StoredRecord | undefined> {
    return this.#deps.records.get(streamId);
  }

  /**
   * May this request read or cancel the stream? Yes with the stream's resume
   * token, or with the API key that opened it (or when auth is off).
   */
  async authorize(streamId: string, keyName: string | undefined, token: string | undefined): Promise<StoredRecord | undefined> {
    const record = await this.record(streamId);
    if (this.#deps.auth.verifyToken(streamId, token)) return record;
    if (keyName === undefined) throw new RunnelError("RUNNEL_ERR_UNAUTHORIZED", "Missing API key or resume token for this stream");
    if (!record) throw new RunnelError("RUNNEL_ERR_STREAM_NOT_FOUND", `No stream ${streamId} (it never existed, or is past its retention)`);
    if (!this.#deps.auth.open && record.state.keyId !== keyName) {
      throw new RunnelError("RUNNEL_ERR_UNAUTHORIZED", "This API key did not open the stream");
    }
    return record;
  }

  /** Open readers (for readiness details and tests). */
  get readers(): number {
    return this.#watched.size;
  }

  close(): void {
    clearInterval(this.#stallTimer);
    this.#attachedSubscription.unsubscribe();
    for (const timer of this.#detached.values()) clearTimeout(timer);
    this.#detached.clear();
  }

  #clearDetach(streamId: string): void {
    const timer = this.#detached.get(streamId);
    if (timer) {
      clearTimeout(timer);
      this.#detached.delete(streamId);
    }
  }

  /** Looks up the records of quiet streams and ends those that can no longer end on their own. */
  #checkQuietStreams(): void {
    const now = Date.now();
    for (const watched of this.#watched) {
      const { reader } = watched;
      if (reader.ended) {
        this.#watched.delete(watched);
        continue;
      }
      // A paused reader waits for its client, not for a worker; it reads the rest from the log later.
      if (reader.activity !== watched.seen || reader.paused) {
        watched.seen = reader.activity;
        watched.quietSince = now;
        continue;
      }
      if (watched.checking || now - watched.quietSince < this.#stallPolicy.quietMs) continue;
      watched.checking = true;
      this.record(reader.streamId)
        .then((record) => {
          const verdict = judgeQuietStream(record?.state, watched.openedAtMs, Date.now(), this.#stallPolicy);
          if (verdict.end && verdict.code === "RUNNEL_ERR_EVENT_GAP" && !watched.caughtUp) {
            // The stream ended but this reader has not seen the end: the log has it. Only if reading it brings nothing is it a gap.
            watched.caughtUp = true;
            reader.catchUp();
            return;
          }
          if (verdict.end && !reader.ended) {
            this.#deps.log.warn({ stream_id: reader.streamId, code: verdict.code }, verdict.message);
            reader.fail(verdict.code, verdict.message);
            void this.cancel(reader.streamId, verdict.message);
          }
        })
        .catch((error: unknown) => this.#deps.log.warn({ stream_id: reader.streamId, err: error }, "stream record check failed"))
        .finally(() => {
          watched.checking = false;
          watched.quietSince = Date.now();
        });
    }
  }
}
