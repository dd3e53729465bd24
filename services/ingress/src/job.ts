/** Builds the job the ingress queues for a new stream: one place for every API and transport. */
import { affinityKeyFor, type ChatRequest, type Job, type RoutingTable } from "@runnel/shared";

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
    traceContext: {},
    keyId: input.keyId,
    affinityKey: affinityKeyFor(input.request, input.session),
    requestRef: "",
  };
}

/** The session id from request headers (first value, trimmed, at most 256 characters). */
export function sessionFrom(headers: Record<string, string | string[] | undefined>): string | undefined {
  const value = headers[SESSION_HEADER];
  const first = Array.isArray(value) ? value[0] : value;
  const trimmed = first?.trim();
  return trimmed ? trimmed.slice(0, 256) : undefined;
}
