/** @runnel/shared: the vocabulary, contracts, config, errors and bus/gRPC helpers every service uses. */
export * from "./bus.js";
export * from "./cancel.js";
export * from "./config.js";
export * from "./control-plane-link.js";
export * from "./drain.js";
export * from "./errors.js";
export * from "./event-log.js";
export * from "./events.js";
export * as controlPlane from "./gen/runnel/v1/control_plane.js";
export * from "./health.js";
export * from "./ids.js";
export * from "./lifecycle.js";
export * from "./logger.js";
export * from "./metrics.js";
export * from "./routing.js";
export * from "./stream-records.js";
export * from "./subjects.js";
export * from "./tracing.js";
