/**
 * The seam between the worker and the providers. An adapter turns one
 * normalised request into the provider's wire format and yields the answer
 * as vocabulary events: an `AsyncIterable` of batches, one batch per read of
 * the provider's socket (a read often carries several tokens, so the stages
 * above pay per read, not per token). `started` comes first, then deltas,
 * then usage, then `done` last. A failure is thrown as a RunnelError; an
 * adapter never ends a stream as if it succeeded when it did not.
 *
 * Backpressure is the consumer not pulling: the adapter reads the next chunk
 * from the provider's socket only when asked for the next batch. The call's
 * AbortSignal (cancel, shutdown, a timeout, a lost hedge) ends the request at
 * once and the iteration with the signal's reason.
 */
import type { ChatRequest, controlPlane, EventBody } from "@runnel/shared/contracts";

/** The events of one read of the provider's answer, in order (never empty). */
export type EventBatch = readonly EventBody[];

export interface StreamCall {
  readonly request: ChatRequest;
  /** The upstream model name of the chosen route. */
  readonly model: string;
  readonly provider: controlPlane.ProviderSpec;
  /** Fired by cancel, shutdown or a timeout: the HTTP request is aborted at once. */
  readonly signal: AbortSignal;
  /**
   * W3C trace context headers (traceparent, tracestate) for the provider
   * request, sent when the provider's `propagateTrace` is on.
   */
  readonly traceHeaders?: Readonly<Record<string, string>>;
  /**
   * Told `true` when the provider accepted the request (answered 2xx) and
   * works on its first token, `false` when that wait ends (a first token, or
   * the attempt ended without one). A signal beside the stream, not in it.
   */
  readonly onWaiting?: (waiting: boolean) => void;
  /** Told of each retry on this route before the first token (telemetry of this stream). */
  readonly onRetry?: (notice: { readonly provider: string; readonly attempt: number; readonly delayMs: number; readonly code: string }) => void;
  /**
   * Asked before a retry on this route: whether another route could take
   * the request right now. When it says yes, the failure goes to the
   * routing layer at once instead of being retried here (failover.sameRouteRetries).
   */
  readonly canFailOver?: () => boolean;
}

export interface ProviderAdapter {
  /** The answer, batch by batch; throws a RunnelError when it fails. */
  stream(call: StreamCall): AsyncIterable<EventBatch>;
}
