/**
 * @runnel/shared: everything the services share, as three surfaces that
 * can also be imported alone: `@runnel/shared/contracts` (the vocabulary,
 * errors, bus names, generated messages, the config schema: no I/O),
 * `@runnel/shared/domain` (routing, health, the rules of a stream's log:
 * no I/O) and `@runnel/shared/runtime` (NATS, gRPC, telemetry, logs, start
 * and stop). The root adds the control plane's gRPC services to the
 * `controlPlane` namespace.
 */
export * from "./contracts.js";
export * as controlPlane from "./control-plane-api.js";
export * from "./domain.js";
export * from "./runtime.js";
