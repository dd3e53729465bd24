/**
 * @runnel/shared/runtime: the adapters at the edges, which load NATS, gRPC,
 * OpenTelemetry and pino: the bus and its topology, the replay log and the
 * stream records, cancels and drains over NATS, the control-plane link,
 * logs, metrics and traces, and how a service starts and stops.
 */
export {
  type Bus,
  bodiesTtlMs,
  connectionWatch,
  connectNats,
  DeliverPolicy,
  ensureTopology,
  isNoMessageFound,
  isRevisionConflict,
  isWrongLastSequence,
  type JetStreamClient,
  type JsMsg,
  type KV,
  type NatsConnection,
  type ObjectStore,
  WORKERS_BUCKET_TTL_MS,
} from "./bus.js";
export { CancelStreamRequest, cancelStream } from "./cancel.js";
export { CLIENT_CHANNEL_OPTIONS, ControlPlaneLink, parseTargets } from "./control-plane-link.js";
export { requestDrain, serveDrain } from "./drain.js";
export { EventLog, type LogBatch, LogCursor } from "./event-log.js";
export { exitOnStartupError, onShutdownSignal, type Probes, startMetricsServer, startProbeServer } from "./lifecycle.js";
export { createLogger, type Logger, type StreamLog, streamLog } from "./logger.js";
export { Buckets, createMetrics, type Meter, type Metrics, type MetricsOptions, noopMeter, observeRouteHealth, PROMETHEUS_CONTENT_TYPE } from "./metrics.js";
export { coalesceWrites } from "./nats-writes.js";
export { deleteRequest, encodeJobForQueue, INLINE_JOB_CAP, inlineJobLimit, loadRequest, storeRequest } from "./request-bodies.js";
export { loadRuntime, RUNNEL_VERSION, type RunningService, type Runtime, runService, type ServiceContext, type ServiceName } from "./service.js";
export { type ClaimResult, StreamRecords, withLivePosition } from "./stream-records.js";
export {
  activeTraceIds,
  type Destination,
  extractContext,
  flushTelemetry,
  processMessage,
  RunnelAttributes,
  recordFailure,
  recordingSpan,
  reportTracing,
  setHttpRoute,
  startProcessSpan,
  startPublishSpan,
  TRACER_NAME,
  traceContextMap,
  traceHeaders,
  tracer,
  tracingSdkStarted,
} from "./tracing.js";
