/**
 * @runnel/shared/contracts: what the services agree on, and nothing that
 * does I/O or loads a client library: the streaming vocabulary (events,
 * the job, their codecs), the error catalogue, the names on the bus, the
 * generated messages of the control plane's contract, and runnel.yaml's
 * schema.
 */
export {
  ConfigError,
  DEFAULT_CONFIG_YAML,
  expandEnv,
  loadConfig,
  loadSettings,
  type ModelConfig,
  type ProviderConfig,
  parseConfig,
  parseDuration,
  type RunnelConfig,
  RunnelConfigSchema,
  type Settings,
  SettingsSchema,
  tracingConfigured,
} from "./config.js";
export {
  ERRORS,
  type ErrorCode,
  type ErrorSpec,
  type FailoverRule,
  type HealthVerdict,
  isErrorCode,
  type OpenAIErrorBody,
  openAIErrorBody,
  RunnelError,
  toRunnelError,
} from "./errors.js";
export {
  type ChatMessage,
  type ChatRequest,
  type ContentPart,
  decodeEvent,
  decodeJob,
  type EventBody,
  type EventKind,
  EventSequencer,
  encodeEvent,
  encodeJob,
  errorEvent,
  type Failover,
  FailoverMode,
  FinishReason,
  failoverJson,
  finishReasonFromOpenAI,
  isTerminal,
  Job,
  MAX_DELTA_CHARS,
  openAIFinishReason,
  ProviderWaiting,
  type Route,
  StreamEvent,
  splitDelta,
  type Tool,
  type ToolCall,
  type Usage,
} from "./events.js";
export * as controlPlane from "./gen/runnel/v1/control_plane_types.js";
export { StreamPhase, StreamState } from "./gen/runnel/v1/control_plane_types.js";
export { isTerminalPhase, type StoredRecord } from "./stream-state.js";
export {
  ATTACHED_SUBJECTS,
  attachedSubject,
  BODIES_BUCKET,
  CANCEL_SUBJECT_TEMPLATE,
  CONSOLE_TRANSPORTS_SUBJECT,
  cancelSubject,
  drainSubject,
  EVENTS_STREAM,
  EVENTS_SUBJECT_TEMPLATE,
  EVENTS_SUBJECTS,
  eventsSubject,
  HEALTH_OUTCOMES_SUBJECT,
  isValidStreamId,
  JOBS_CONSUMER,
  JOBS_STREAM,
  JOBS_SUBJECT,
  STREAMS_BUCKET,
  signalSubject,
  streamSubjects,
  WORKERS_BUCKET,
} from "./subjects.js";
