/**
 * The seam between the worker and the providers. An adapter turns one
 * normalised request into the provider's wire format, streams the answer,
 * and reports it as vocabulary events. It throws a RunnelError for every
 * failure; it never ends a stream as if it succeeded when it did not.
 */
import type { ChatRequest, controlPlane, EventBody } from "@runnel/shared";

export interface StreamCall {
  readonly request: ChatRequest;
  /** The upstream model name of the chosen route. */
  readonly model: string;
  readonly provider: controlPlane.ProviderSpec;
  /** Fired by cancel, shutdown or a timeout: the HTTP request is aborted at once. */
  readonly signal: AbortSignal;
  /** Receives every event, in order. `started` comes first, then deltas, then usage, then `done`. */
  readonly emit: (event: EventBody) => void;
  /**
   * Backpressure from the bus: undefined when the adapter may read on, else
   * a promise to await before reading the next chunk from the provider
   * (checked once per network read, not per token).
   */
  readonly ready?: () => Promise<void> | undefined;
  /**
   * Whether another route could take this request now (the route runner
   * knows; the adapter does not). When it says yes, a failure before the
   * first token goes back to the caller at once, to fail over, instead of
   * being retried on this route after a wait. Absent: the route's retries
   * apply as configured.
   */
  readonly canFailOver?: () => boolean;
  /**
   * W3C trace context headers (traceparent, tracestate) for the provider
   * request, sent when the provider's `propagateTrace` is on.
   */
  readonly traceHeaders?: Readonly<Record<string, string>>;
  /**
   * Told `true` when the provider accepted the request (answered 2xx) and
   * works on its first token, `false` when that wait ends (a first token, or
   * the attempt ended without one).
   */
  readonly onWaiting?: (waiting: boolean) => void;
  /** Told of each retry on this route before the first token (telemetry of this stream). */
  readonly onRetry?: (notice: { readonly provider: string; readonly attempt: number; readonly delayMs: number; readonly code: string }) => void;
}

export interface ProviderAdapter {
  /** Resolves when the stream ended with `done`; rejects with a RunnelError otherwise. */
  stream(call: StreamCall): Promise<void>;
}
