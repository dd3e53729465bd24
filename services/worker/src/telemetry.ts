/**
 * The worker's telemetry: the real StreamObserver (spans, span events and
 * metrics of one stream) and the instruments it records on.
 *
 * Spans. The job's consumer span (`process runnel.jobs.submit`, app.ts) is
 * the stream on this worker: the observer is created inside it and adds the
 * stream-level events to it (failover, hedge, cancel with its reason, the
 * terminal state). Each provider request is a CLIENT span of its own,
 * `chat {model}`, child of the job span, with the gen_ai.* attributes: one
 * span per attempt, not one span per job with the attempts as events,
 * because attempts overlap (a hedge races the attempt it hedges), each has
 * its own route, model, timing and failure, and one client span per call is
 * what the GenAI conventions describe; a failover then reads as sibling
 * attempts under the job. Retries on the same route (before the first token)
 * are events on their attempt's span. Nothing is recorded per token, and no
 * prompt or completion text is ever put on a span.
 *
 * Metrics, all recorded per attempt or per stream: the GenAI client metrics
 * (`gen_ai.client.operation.duration`, `gen_ai.client.token.usage`,
 * `gen_ai.client.operation.time_to_first_chunk`), and Runnel's own (stream
 * outcomes, retries, failovers, hedges, cancels, the job queue lag, the mean
 * time per output token of a stream).
 */
import { type Attributes, context, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { type Failover, FailoverMode, type Job, type Route, type Usage } from "@runnel/shared/contracts";
import { Buckets, type Meter, RunnelAttributes, traceContextMap, tracer } from "@runnel/shared/runtime";
import type { AttemptInfo, ObserveJob, StreamEnd, StreamObserver } from "./stream-observer.js";

/** `gen_ai.provider.name` of a provider type (the telemetry flavour its wire format is). */
export function genAiProvider(providerType: string): string {
  switch (providerType) {
    case "openai":
    case "anthropic":
      return providerType;
    case "gemini":
      return "gcp.gemini";
    default:
      // The mock provider speaks OpenAI's format, but it is not OpenAI.
      return `runnel.${providerType}`;
  }
}

const FAILOVER_MODES: Readonly<Record<number, string>> = {
  [FailoverMode.FAILOVER_MODE_NEXT_ROUTE]: "next_route",
  [FailoverMode.FAILOVER_MODE_RESTART]: "restart",
  [FailoverMode.FAILOVER_MODE_CONTINUE]: "continue",
  [FailoverMode.FAILOVER_MODE_HEDGE]: "hedge",
};

function failoverMode(mode: FailoverMode): string {
  return FAILOVER_MODES[mode] ?? "unspecified";
}

/** The instruments of one worker. */
export class WorkerInstruments {
  readonly operationDuration;
  readonly tokenUsage;
  readonly timeToFirstChunk;
  readonly timePerOutputToken;
  readonly outcomes;
  readonly retries;
  readonly failovers;
  readonly hedges;
  readonly cancels;
  readonly queueLag;

  constructor(meter: Meter) {
    this.operationDuration = meter.createHistogram("gen_ai.client.operation.duration", {
      unit: "s",
      description: "Duration of one provider request (one attempt), to its end or failure.",
      advice: { explicitBucketBoundaries: [...Buckets.duration] },
    });
    this.tokenUsage = meter.createHistogram("gen_ai.client.token.usage", {
      unit: "{token}",
      description: "Input and output tokens of a served stream, as the provider reported them.",
      advice: { explicitBucketBoundaries: [...Buckets.tokens] },
    });
    this.timeToFirstChunk = meter.createHistogram("gen_ai.client.operation.time_to_first_chunk", {
      unit: "s",
      description: "Time from sending a provider request to its first token, per attempt.",
      advice: { explicitBucketBoundaries: [...Buckets.latency] },
    });
    this.timePerOutputToken = meter.createHistogram("runnel.stream.time_per_output_token", {
      unit: "s",
      description: "Mean time between output tokens of one served stream: (end - first token) / (output tokens - 1).",
      advice: { explicitBucketBoundaries: [...Buckets.perToken] },
    });
    this.outcomes = meter.createCounter("runnel.stream.outcomes", {
      description: "Streams ended on this worker, by outcome (done, failed_over, error, cancelled, skipped) and error.type.",
    });
    this.retries = meter.createCounter("runnel.provider.retries", { description: "Retries on the same route before the first token." });
    this.failovers = meter.createCounter("runnel.stream.failovers", { description: "Switches of a stream to another route, by mode." });
    this.hedges = meter.createCounter("runnel.stream.hedges", { description: "Hedged requests started while another route was slow to its first token." });
    this.cancels = meter.createCounter("runnel.stream.cancels", { description: "Streams whose generation was cancelled on this worker." });
    this.queueLag = meter.createHistogram("runnel.job.queue_lag", {
      unit: "s",
      description: "Time from the ingress creating a job to a worker starting it (clocks of two hosts; redeliveries included).",
      advice: { explicitBucketBoundaries: [...Buckets.latency] },
    });
  }
}

interface AttemptState {
  readonly info: AttemptInfo;
  readonly span: Span;
  readonly startedAt: number;
  readonly attributes: Attributes;
  firstTokenAt: number | undefined;
}

/**
 * One stream's observer. Created by `observe(job)` inside the job's consumer
 * span (the active context then), which parents its attempt spans and takes
 * its stream-level events.
 */
export class JobTelemetry implements StreamObserver {
  readonly #job: Job;
  readonly #instruments: WorkerInstruments;
  readonly #parent = context.active();
  readonly #jobSpan: Span | undefined;
  readonly #attempts: AttemptState[] = [];
  #failedOver = false;
  #ended = false;

  constructor(job: Job, instruments: WorkerInstruments, now = Date.now()) {
    this.#job = job;
    this.#instruments = instruments;
    const span = trace.getSpan(this.#parent);
    this.#jobSpan = span?.isRecording() ? span : undefined;
    if (job.createdAtMs > 0) instruments.queueLag.record(Math.max(0, now - job.createdAtMs) / 1000);
  }

  attemptStarted(attempt: AttemptInfo): Readonly<Record<string, string>> | undefined {
    const request = this.#job.request;
    const attributes: Attributes = {
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": genAiProvider(attempt.providerType),
      "gen_ai.request.model": attempt.route.model,
      "runnel.route.provider": attempt.route.provider,
    };
    const span = tracer().startSpan(
      `chat ${attempt.route.model}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          ...attributes,
          // The older name of gen_ai.provider.name, for backends that still key on it.
          "gen_ai.system": genAiProvider(attempt.providerType),
          [RunnelAttributes.STREAM_ID]: this.#job.streamId,
          "runnel.attempt.index": attempt.index,
          "runnel.attempt.hedge": attempt.hedge,
          "runnel.attempt.prefill": attempt.prefill,
          ...(request?.maxTokens !== undefined ? { "gen_ai.request.max_tokens": request.maxTokens } : {}),
          ...(request?.temperature !== undefined ? { "gen_ai.request.temperature": request.temperature } : {}),
          ...(request?.topP !== undefined ? { "gen_ai.request.top_p": request.topP } : {}),
        },
      },
      this.#parent,
    );
    this.#attempts.push({ info: attempt, span, startedAt: performance.now(), attributes, firstTokenAt: undefined });
    if (attempt.hedge) {
      this.#instruments.hedges.add(1, { "runnel.route.provider": attempt.route.provider });
      this.#jobSpan?.addEvent("runnel.hedge", { "runnel.route.provider": attempt.route.provider, "gen_ai.request.model": attempt.route.model });
    }
    // The provider continues the trace under this attempt's span (a non-recording span carries the context on).
    const headers = traceContextMap(trace.setSpan(this.#parent, span));
    return Object.keys(headers).length > 0 ? headers : undefined;
  }

  firstToken(attempt: AttemptInfo, ttftMs: number): void {
    const state = this.#state(attempt);
    if (!state) return;
    state.firstTokenAt = performance.now();
    const seconds = ttftMs / 1000;
    state.span.setAttribute("gen_ai.response.time_to_first_chunk", seconds);
    state.span.addEvent("runnel.first_token", { "gen_ai.response.time_to_first_chunk": seconds });
    this.#instruments.timeToFirstChunk.record(seconds, state.attributes);
  }

  attemptEnded(attempt: AttemptInfo, errorCode: string | undefined): void {
    const index = this.#attempts.findIndex((state) => state.info === attempt);
    if (index < 0) return;
    const [state] = this.#attempts.splice(index, 1) as [AttemptState];
    this.#endAttempt(state, errorCode, undefined);
  }

  retry(provider: string, attempt: number, delayMs: number, errorCode: string): void {
    const state = [...this.#attempts].reverse().find((each) => each.info.route.provider === provider);
    const attributes = { "runnel.route.provider": provider, "runnel.retry.attempt": attempt, "runnel.retry.delay_ms": delayMs, "error.type": errorCode };
    (state?.span ?? this.#jobSpan)?.addEvent("runnel.retry", attributes);
    this.#instruments.retries.add(1, { "runnel.route.provider": provider, "error.type": errorCode });
  }

  failover(event: Failover): void {
    const mode = failoverMode(event.mode);
    this.#failedOver = true;
    this.#instruments.failovers.add(1, { "runnel.failover.mode": mode, ...(event.reasonCode ? { "error.type": event.reasonCode } : {}) });
    this.#jobSpan?.addEvent("runnel.failover", {
      "runnel.failover.mode": mode,
      "runnel.failover.from": routeName(event.from),
      "runnel.failover.to": routeName(event.to),
      "runnel.failover.takeover": event.takeover,
      ...(event.reasonCode ? { "error.type": event.reasonCode } : {}),
    });
  }

  cancelled(reason: string): void {
    this.#instruments.cancels.add(1);
    this.#jobSpan?.addEvent("runnel.cancel", { "runnel.cancel.reason": reason });
  }

  ended(end: StreamEnd, detail: { errorCode?: string; served?: Route; usage?: Usage; finishReason?: string }): void {
    if (this.#ended) return;
    this.#ended = true;
    const served = detail.served;
    // The serving attempt (the last one started on that route) ends well; any other still open ends with the stream's error.
    const winner = served
      ? [...this.#attempts].reverse().find((state) => state.info.route.provider === served.provider && state.info.route.model === served.model)
      : undefined;
    for (const state of this.#attempts.splice(0)) {
      if (state === winner) this.#endAttempt(state, end === "done" ? undefined : (detail.errorCode ?? end), detail);
      else this.#endAttempt(state, detail.errorCode ?? (end === "done" ? "RUNNEL_ERR_CANCELLED" : end), undefined);
    }
    const outcome = end === "failed" ? "error" : end === "done" && this.#failedOver ? "failed_over" : end;
    this.#instruments.outcomes.add(1, { outcome, ...(detail.errorCode ? { "error.type": detail.errorCode } : {}) });
    const span = this.#jobSpan;
    if (!span) return;
    span.setAttribute(RunnelAttributes.OUTCOME, outcome);
    span.addEvent("runnel.stream.end", {
      [RunnelAttributes.OUTCOME]: outcome,
      ...(detail.errorCode ? { "error.type": detail.errorCode } : {}),
      ...(detail.finishReason ? { "gen_ai.response.finish_reasons": [detail.finishReason] } : {}),
      ...(served ? { "runnel.route.provider": served.provider, "gen_ai.response.model": served.model } : {}),
    });
    if (end === "failed" && detail.errorCode) {
      span.setAttribute("error.type", detail.errorCode);
      span.setStatus({ code: SpanStatusCode.ERROR, message: detail.errorCode });
    }
  }

  #state(attempt: AttemptInfo): AttemptState | undefined {
    return this.#attempts.find((state) => state.info === attempt);
  }

  #endAttempt(state: AttemptState, errorCode: string | undefined, served: { usage?: Usage; finishReason?: string; served?: Route } | undefined): void {
    const { span } = state;
    const now = performance.now();
    const metricAttributes: Attributes = { ...state.attributes };
    if (errorCode) {
      metricAttributes["error.type"] = errorCode;
      span.setAttribute("error.type", errorCode);
      // A lost hedge or a cancelled stream is not a provider failure: no error status for it.
      if (errorCode !== "RUNNEL_ERR_CANCELLED") span.setStatus({ code: SpanStatusCode.ERROR, message: errorCode });
    } else if (served) {
      const model = served.served?.model ?? state.info.route.model;
      metricAttributes["gen_ai.response.model"] = model;
      span.setAttribute("gen_ai.response.model", model);
      if (served.finishReason) span.setAttribute("gen_ai.response.finish_reasons", [served.finishReason]);
      const usage = served.usage;
      if (usage) {
        span.setAttributes({ "gen_ai.usage.input_tokens": usage.inputTokens, "gen_ai.usage.output_tokens": usage.outputTokens });
        if (usage.cachedInputTokens > 0) span.setAttribute("gen_ai.usage.cache_read.input_tokens", usage.cachedInputTokens);
        this.#instruments.tokenUsage.record(usage.inputTokens, { ...metricAttributes, "gen_ai.token.type": "input" });
        this.#instruments.tokenUsage.record(usage.outputTokens, { ...metricAttributes, "gen_ai.token.type": "output" });
        if (state.firstTokenAt !== undefined && usage.outputTokens > 1) {
          this.#instruments.timePerOutputToken.record((now - state.firstTokenAt) / 1000 / (usage.outputTokens - 1), metricAttributes);
        }
      }
    }
    this.#instruments.operationDuration.record((now - state.startedAt) / 1000, metricAttributes);
    span.end();
  }
}

function routeName(route: Route | undefined): string {
  return route ? `${route.provider}/${route.model}` : "";
}

/** Streams running on this worker and its capacity, as gauges read at each scrape (the `activeStreams` autoscaling signal). */
export function observeWorkerLoad(meter: Meter, load: () => { inFlight: number; capacity: number }): void {
  const active = meter.createObservableGauge("runnel.worker.streams.active", { description: "Streams this worker is generating." });
  const capacity = meter.createObservableGauge("runnel.worker.capacity", { description: "Streams this worker runs at once at most (worker.concurrency)." });
  meter.addBatchObservableCallback(
    (result) => {
      const now = load();
      result.observe(active, now.inFlight);
      result.observe(capacity, now.capacity);
    },
    [active, capacity],
  );
}

/** The worker's `observe` dependency: one JobTelemetry per job, on `instruments`. */
export function observeJobs(instruments: WorkerInstruments): ObserveJob {
  return (job) => new JobTelemetry(job, instruments);
}
