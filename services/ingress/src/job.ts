/** Builds the job the ingress queues for a new stream: one place for every API and transport. */
import type { ChatRequest, Job } from "@runnel/shared/contracts";
import { affinityKeyFor, type RoutingTable } from "@runnel/shared/domain";

/** The header a client sets to keep a conversation on one route (the `affinity` strategy). */
export const SESSION_HEADER = "x-runnel-session-id";

export interface JobInput {
  readonly streamId: string;
  readonly model: string;
  readonly request: ChatRequest;
  readonly routing: RoutingTable;
  readonly keyId: string;
  /** The client's session id, if it sent one. */
  readonly session?: string | undefined;
  /** The W3C trace context the client sent (passed on to the provider when Runnel itself traces nothing). */
  readonly traceContext?: Readonly<Record<string, string>>;
  readonly now?: number;
}

export function buildJob(input: JobInput): Job {
  return {
    streamId: input.streamId,
    model: input.model,
    request: input.request,
    // The worker plans the routes when it starts the job, with live health.
    routes: [],
    createdAtMs: input.now ?? Date.now(),
    routingVersion: input.routing.version,
    traceContext: { ...input.traceContext },
    keyId: input.keyId,
    affinityKey: affinityKeyFor(input.request, input.session),
    requestRef: "",
  };
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/**
 * The W3C trace context a client sent (`traceparent`, and `tracestate` with
 * it), if well-formed. With tracing on, the ingress continues it and the job
 * carries the ingress's own context instead; with tracing off, this is what
 * reaches the provider, so the client's trace is not broken by the gateway.
 */
export function clientTraceContext(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const parent = headers.traceparent;
  if (typeof parent !== "string" || !TRACEPARENT.test(parent.trim())) return {};
  const state = headers.tracestate;
  return typeof state === "string" && state.length <= 512 ? { traceparent: parent.trim(), tracestate: state } : { traceparent: parent.trim() };
}

/** The session id from request headers (first value, trimmed, at most 256 characters). */
export function sessionFrom(headers: Record<string, string | string[] | undefined>): string | undefined {
  const value = headers[SESSION_HEADER];
  const first = Array.isArray(value) ? value[0] : value;
  const trimmed = first?.trim();
  return trimmed ? trimmed.slice(0, 256) : undefined;
}
