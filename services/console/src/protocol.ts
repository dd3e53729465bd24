/**
 * The inspector's API, between the ingress (which serves it) and the
 * inspector page (which reads it): the one definition of its shapes. All
 * times are milliseconds since the epoch on the ingress's clock, except in
 * traces (microseconds, as the trace backend gives them).
 *
 *   GET    /console/api/status                 InspectorStatus (no credential needed)
 *   GET    /console/api/feed                   SSE: `hello` FeedHello, then `streams` FeedStreams
 *                                              every half second (changes only) and `routes` FeedRoutes
 *   GET    /console/api/streams/{id}           StreamDetail
 *   DELETE /console/api/streams/{id}           StreamDetail after the cancel
 *   GET    /console/api/streams/{id}/trace     StreamTrace (traceId null until the backend has it)
 *
 * Every call but `status` needs an admin key (`Authorization: Bearer`), or
 * nothing on a gateway without auth that opened the inspector; a disabled
 * inspector answers 404.
 */

export const CONSOLE_API = "/console/api";

export interface InspectorStatus {
  readonly inspector: "enabled" | "disabled";
  /** What lets a request in: an admin key, or nothing (no auth, and `console.inspectorWithoutAuth`). */
  readonly access: "admin-key" | "open";
  /** Why it is disabled, or what it needs. */
  readonly reason: string;
  /** A trace backend is configured (RUNNEL_TRACE_QUERY_URL): streams' traces can be drawn. */
  readonly traces: boolean;
}

export type PhaseName = "queued" | "running" | "done" | "failed" | "cancelled" | "unknown";

/** One stream in the live list. */
export interface StreamRow {
  readonly id: string;
  /** The name of the API key that opened it ("" with auth off); never the key. */
  readonly key: string;
  /** The public model asked for. */
  readonly model: string;
  /** The provider serving it, and the upstream model (the route). */
  readonly provider: string;
  readonly route: string;
  /** The worker that owns it. */
  readonly owner: string;
  readonly phase: PhaseName;
  /** How it ended: `done (stop)`, an error code, `cancelled: <reason>`; "" while it runs. */
  readonly outcome: string;
  readonly createdAtMs: number;
  readonly firstTokenAtMs: number | null;
  readonly endedAtMs: number | null;
  /** From the job's creation to the first token seen on the bus; null when the inspector joined after it. */
  readonly ttftMs: number | null;
  /** Deltas (tokens) so far; when `partial`, counted from the stream's last recorded position. */
  readonly tokens: number;
  /** Tokens per second: over the last half seconds while it runs, first to last token once it ended. */
  readonly rate: number | null;
  /** How its client reads it (`sse`, `ndjson`, `json`, `websocket`), or `unknown` (a client of another ingress replica). */
  readonly transport: string;
  /** The inspector saw the stream only after it had started: its first token and early counts are not known exactly. */
  readonly partial: boolean;
}

export interface FeedHello {
  readonly now: number;
  /** How long finished streams stay in the list. */
  readonly lingerMs: number;
  /** The ingress replica serving this feed. */
  readonly instance: string;
}

export interface FeedStreams {
  readonly now: number;
  /** True on the first message: `upserts` is the whole list. */
  readonly full: boolean;
  readonly upserts: readonly StreamRow[];
  readonly removes: readonly string[];
  /** Streams in flight beyond the most the inspector tracks, left out of the list. */
  readonly overflow: number;
}

export type CircuitName = "closed" | "open" | "half-open" | "unknown";

/** One route's health, as the control plane computes it (what `runnel providers` shows). */
export interface RouteRow {
  readonly provider: string;
  readonly model: string;
  readonly circuit: CircuitName;
  /** A 429 put the route in cooldown until then (0: none). */
  readonly cooldownUntilMs: number;
  /** EWMA of the time to first token. */
  readonly ttftMs: number;
  readonly inFlight: number;
  /** Failed share of the recent outcomes, 0..1. */
  readonly errorRate: number;
  readonly requestsLastMinute: number;
}

export interface FeedRoutes {
  readonly now: number;
  readonly routes: readonly RouteRow[];
  readonly workers: readonly { readonly id: string; readonly inFlight: number; readonly capacity: number; readonly draining: boolean }[];
  /** Set when the control plane did not answer (the last figures are kept). */
  readonly error: string | null;
}

export type TimelineKind = "queued" | "claimed" | "attempt" | "first_token" | "failover" | "resume" | "cancel" | "end";

export interface TimelineEntry {
  readonly atMs: number;
  readonly kind: TimelineKind;
  readonly text: string;
}

export interface StreamDetail {
  readonly now: number;
  readonly stream: StreamRow;
  readonly timeline: readonly TimelineEntry[];
}

/** One span of a stream's trace, from the trace backend. */
export interface TraceSpan {
  readonly spanId: string;
  /** The parent span, or null for a root (or a parent the backend does not have). */
  readonly parentId: string | null;
  readonly service: string;
  readonly name: string;
  /** Microseconds since the epoch. */
  readonly startUs: number;
  readonly durationUs: number;
  /** `server`, `client`, `producer`, `consumer`, `internal`. */
  readonly kind: string;
  readonly error: boolean;
  /** A few attributes worth showing (routes, destinations, models, statuses, Runnel's own). */
  readonly attributes: Readonly<Record<string, string>>;
  readonly events: readonly { readonly atUs: number; readonly name: string }[];
}

export interface StreamTrace {
  /** Null while the backend has no trace of the stream (its spans are exported as they end): ask again later. */
  readonly traceId: string | null;
  /** The trace in the configured viewer (RUNNEL_TRACE_LINK), if any. */
  readonly link: string | null;
  readonly spans: readonly TraceSpan[];
  /** Why there is no trace yet, when there is none. */
  readonly pending: string | null;
}
