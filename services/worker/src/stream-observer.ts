/**
 * What the worker reports about one stream while it runs it: the seam
 * between the job runner (which knows what happens) and telemetry (spans,
 * span events, metrics), so the runner stays free of OpenTelemetry.
 */
import type { Failover, Job, Route, Usage } from "@runnel/shared/contracts";

/** How a job ended, as the runner reports it. */
export type StreamEnd = "done" | "failed" | "cancelled" | "skipped" | "handed-off";

export interface AttemptInfo {
  readonly route: Route;
  /** The provider type of the route ("openai", "anthropic", ...). */
  readonly providerType: string;
  /** 1 for the first route tried, 2 for the next, ... */
  readonly index: number;
  /** Started as a hedge while another attempt was still waiting for its first token. */
  readonly hedge: boolean;
  /** Started to continue a partial answer (assistant prefill). */
  readonly prefill: boolean;
}

export interface StreamObserver {
  /**
   * A provider request on one route is about to be sent. Returns the W3C
   * trace headers that continue the attempt's span at the provider, or
   * undefined when this observer traces nothing.
   */
  attemptStarted(attempt: AttemptInfo): Readonly<Record<string, string>> | undefined;
  /** The attempt produced its first token, `ttftMs` after it started. */
  firstToken(attempt: AttemptInfo, ttftMs: number): void;
  /** An attempt ended without winning or completing (failed, lost a hedge, was cancelled). */
  attemptEnded(attempt: AttemptInfo, errorCode: string | undefined): void;
  /** A retry on the same route (before the first token). */
  retry(provider: string, attempt: number, delayMs: number, errorCode: string): void;
  /** The stream switched routes; the same event goes on the stream. */
  failover(event: Failover): void;
  /** The stream was cancelled (client, API, shutdown). */
  cancelled(reason: string): void;
  /** The stream ended. `served` is the route that produced the answer, if any. */
  ended(end: StreamEnd, detail: { errorCode?: string; served?: Route; usage?: Usage; finishReason?: string }): void;
}

/** Makes one observer per job (telemetry reads the job's trace context). */
export type ObserveJob = (job: Job) => StreamObserver;

/** An observer that does nothing: the default when telemetry is off. */
export const NOOP_OBSERVER: StreamObserver = Object.freeze({
  attemptStarted() {
    return undefined;
  },
  firstToken() {},
  attemptEnded() {},
  retry() {},
  failover() {},
  cancelled() {},
  ended() {},
});
