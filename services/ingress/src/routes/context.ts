import type { RunnelConfig } from "@runnel/shared/contracts";
import type { RoutingTable } from "@runnel/shared/domain";
import type { Logger } from "@runnel/shared/runtime";
import type { Auth } from "../auth.js";
import type { ErrorShape } from "../http-errors.js";
import type { OpenStream } from "../stream-writer.js";
import type { StreamService } from "../streams.js";
import type { IngressTelemetry, Transport } from "../telemetry.js";

/** What every transport's routes need from the ingress. */
export interface RouteContext {
  readonly streams: StreamService;
  readonly auth: Auth;
  readonly log: Logger;
  readonly options: Readonly<RunnelConfig["ingress"]>;
  /** Stream metrics and span events. */
  readonly telemetry: IngressTelemetry;
  /** The last routing snapshot; throws RUNNEL_ERR_NOT_READY before the first. */
  readonly routing: () => RoutingTable;
  /** True once shutdown began. */
  readonly closing: () => boolean;
  /** Throws RUNNEL_ERR_SHUTTING_DOWN once shutdown began. */
  readonly refuseIfClosing: () => void;
  /** Registers an open response (counted as an active stream of `transport`) so shutdown can end it; returns the function to call when it ends. */
  readonly track: (stream: OpenStream, transport: Transport) => () => void;
}

declare module "fastify" {
  interface FastifyContextConfig {
    /** The shape in which the route's errors are answered, Fastify's own included (default: OpenAI's). */
    errors?: ErrorShape;
  }
}
