/**
 * Metrics: OpenTelemetry instruments (semantic-convention names such as
 * `gen_ai.client.operation.duration`) read by a Prometheus exporter that every
 * service serves on GET /metrics in the Prometheus text format (the ingress on
 * its own port, the worker and the control plane on their health port).
 *
 * Each service owns one MeterProvider, created in main.ts; it is independent
 * of tracing, so /metrics works whether or not an OTLP endpoint is set.
 * Durations are in seconds and token counts in `{token}`, as the conventions
 * say; the exporter turns `gen_ai.client.operation.duration` (unit `s`) into
 * `gen_ai_client_operation_duration_seconds`, and a counter `x` into
 * `x_total`. Recording happens per stream or per attempt, never per token.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { createNoopMeter, type Meter } from "@opentelemetry/api";
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { MeterProvider } from "@opentelemetry/sdk-metrics";
import { CircuitState, type RouteStatus } from "./gen/runnel/v1/control_plane_types.js";

export type { Meter };

/** Content type of the Prometheus text exposition format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Bucket boundaries, in seconds or tokens. Token streams span four orders of
 * magnitude: a cached first token comes in milliseconds, a reasoning model's
 * in a minute, and a long generation runs for tens of minutes.
 */
export const Buckets = {
  /** Time to a first token or byte, queueing lags: 1 ms to 5 min. */
  latency: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300],
  /** What Runnel adds on top of the provider: sub-millisecond to seconds. */
  overhead: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10],
  /** A whole stream or provider request: 10 ms to an hour. */
  duration: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600],
  /** Mean time between output tokens of one stream: 0.1 ms to 5 s. */
  perToken: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5],
  /** Tokens per request, as gen_ai.client.token.usage recommends. */
  tokens: [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864],
} as const;

export interface MetricsOptions {
  /** service.name: `runnel-ingress`, `runnel-worker`, `runnel-control-plane`. */
  readonly service: string;
  readonly version: string;
  readonly instanceId: string;
}

/** A service's metrics: its Meter and the Prometheus rendering of everything recorded on it. */
export interface Metrics {
  readonly meter: Meter;
  /** Every instrument in the Prometheus text format. */
  render(): Promise<string>;
  /** Answers GET /metrics on a plain node:http server. */
  handle(request: IncomingMessage, response: ServerResponse): void;
  shutdown(): Promise<void>;
}

export function createMetrics(options: MetricsOptions): Metrics {
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({
    resource: resourceFromAttributes({
      "service.name": options.service,
      "service.version": options.version,
      "service.instance.id": options.instanceId,
    }),
    readers: [exporter],
  });
  // No otel_scope_* labels: every series comes from Runnel's one meter. target_info keeps the resource.
  const serializer = new PrometheusSerializer(undefined, false, undefined, false, true);
  const render = async () => {
    const { resourceMetrics, errors } = await exporter.collect();
    if (errors.length > 0) throw new AggregateError(errors, "collecting metrics failed");
    return serializer.serialize(resourceMetrics);
  };
  return {
    meter: provider.getMeter("runnel", options.version),
    render,
    handle(_request, response) {
      render().then(
        (text) => response.writeHead(200, { "content-type": PROMETHEUS_CONTENT_TYPE }).end(text),
        (error: unknown) => response.writeHead(500, { "content-type": "text/plain" }).end(`# metrics failed: ${String(error)}\n`),
      );
    },
    shutdown: () => provider.shutdown(),
  };
}

/** A Meter that records nothing: the default where a service builds its parts without metrics (component tests). */
export function noopMeter(): Meter {
  return createNoopMeter();
}

/**
 * Route health as gauges, read from `status` once per scrape: the circuit of
 * each route (`runnel.route.circuit.state`: 0 closed, 1 half-open, 2 open),
 * its error rate, EWMA time to first token and in-flight requests. The control
 * plane calls it with its HealthBook's `status`; any holder of one may.
 */
export function observeRouteHealth(meter: Meter, status: () => readonly RouteStatus[]): void {
  const circuit = meter.createObservableGauge("runnel.route.circuit.state", {
    description: "Circuit breaker of a route: 0 closed, 1 half-open (a probe is out), 2 open.",
  });
  const errorRate = meter.createObservableGauge("runnel.route.error_rate", { description: "Failed share of a route's recent outcomes, 0..1." });
  const ttft = meter.createObservableGauge("runnel.route.time_to_first_token", { unit: "s", description: "EWMA of a route's time to first token." });
  const inFlight = meter.createObservableGauge("runnel.route.in_flight", { description: "Requests in flight on a route, across the workers that reported." });
  meter.addBatchObservableCallback(
    (result) => {
      for (const route of status()) {
        const attributes = { "runnel.route.provider": route.provider, "gen_ai.request.model": route.model };
        result.observe(circuit, CIRCUIT_VALUES[route.circuit] ?? 0, attributes);
        result.observe(errorRate, route.errorRate, attributes);
        result.observe(ttft, route.ttftMs / 1000, attributes);
        result.observe(inFlight, route.inFlight, attributes);
      }
    },
    [circuit, errorRate, ttft, inFlight],
  );
}

const CIRCUIT_VALUES: Readonly<Record<number, number>> = {
  [CircuitState.CIRCUIT_STATE_CLOSED]: 0,
  [CircuitState.CIRCUIT_STATE_HALF_OPEN]: 1,
  [CircuitState.CIRCUIT_STATE_OPEN]: 2,
};
