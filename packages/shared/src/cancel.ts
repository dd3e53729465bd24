/**
 * Cancellation, the same steps wherever it is started: record the cancel
 * (compare-and-set), then tell the owning worker. The control plane runs it
 * for `CancelStream`; the ingress runs it itself when no control-plane
 * replica answers, so a client disconnect still stops the provider.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { context } from "@opentelemetry/api";
import { CancelStreamRequest, type StreamState } from "./gen/runnel/v1/control_plane_types.js";
import { StreamPhase, type StreamRecords } from "./stream-records.js";
import { CANCEL_SUBJECT_TEMPLATE, cancelSubject } from "./subjects.js";
import { startPublishSpan, traceHeaders } from "./tracing.js";

export { CancelStreamRequest };

export async function cancelStream(
  records: StreamRecords,
  nc: NatsConnection,
  streamId: string,
  reason: string,
): Promise<{ state: StreamState; changed: boolean }> {
  const result = await records.cancel(streamId, reason);
  // Tell the owner even when the cancel was already recorded: the first
  // notice may have been lost, and a worker ignores a cancel for a stream it
  // no longer runs.
  if (result.state.owner && result.state.phase === StreamPhase.STREAM_PHASE_CANCELLED) {
    const subject = cancelSubject(result.state.owner);
    const data = CancelStreamRequest.encode({ streamId, reason }).finish();
    // The worker runs the cancel in this trace (the request that caused it).
    const { span, context: publishing } = startPublishSpan(
      { subject, template: CANCEL_SUBJECT_TEMPLATE, bodySize: data.length },
      { "runnel.stream.id": streamId, "runnel.cancel.reason": reason },
    );
    const headers = traceHeaders(publishing);
    context.with(publishing, () => nc.publish(subject, data, headers ? { headers } : undefined));
    span.end();
  }
  return result;
}
