/**
 * @runnel/shared/domain: the decisions, free of I/O: routing (snapshots,
 * strategies, priorities), route health (circuits, cooldowns, budgets), the
 * rules of a stream's log (fencing, folding, takeovers), and ids.
 */
export {
  type Admission,
  CircuitBreaker,
  CircuitState,
  DEFAULT_HEALTH_SETTINGS,
  HealthBook,
  healthSettings,
  OutcomeKind,
  type ProviderHealthSettings,
  type RouteOutcome,
  type RouteStatus,
  routeKey,
  type Unavailable,
} from "./health.js";
export { newInstanceId, newStreamId, processInstanceId } from "./ids.js";
export {
  affinityKeyFor,
  apiKeyDigest,
  buildSnapshot,
  type ClientAuth,
  effectivePriorities,
  fnv1a,
  type HealthView,
  type ModelSpec,
  orderGroup,
  type ProviderSpec,
  type RouteSpec,
  RoutingSnapshot,
  RoutingTable,
  redactForIngress,
  redactForWorker,
  type Strategy,
} from "./routing.js";
export { EpochFence, planTakeover, StreamFold, type StreamSoFar, type TakeoverPlan } from "./stream-fold.js";
