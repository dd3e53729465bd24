/**
 * Starts the OpenTelemetry SDK before a service's own modules load. Each
 * service has a two-line `src/instrument.ts` that calls `startTracing` and is
 * preloaded with `node --import <service>/dist/instrument.js <service>/dist/main.js`
 * (`npm start`, the test stack and the Helm chart all start the services so).
 * `--import` runs, top-level await included, before the entry point's module
 * graph is even resolved, which is what ESM instrumentation needs: the
 * import-in-the-middle loader hook must be registered before `@grpc/grpc-js`
 * and `node:http` are imported. A first import inside main.ts would be too
 * late: static imports are all linked before any of them runs.
 *
 * Imported on its own (`@runnel/shared/tracing-sdk`), never from the package
 * index, so loading it loads neither the SDK nor anything instrumented. When
 * no exporter is configured (no OTEL_EXPORTER_OTLP_ENDPOINT, no
 * OTEL_TRACES_EXPORTER) it returns at once: no loader hook, no SDK, no
 * exporter; the OpenTelemetry API then answers every call with a no-op.
 *
 * What it starts: NodeSDK with the OTLP trace exporter chosen by the standard
 * OTEL_* variables (grpc, http/protobuf or http/json), the W3C propagators,
 * the sampler from OTEL_TRACES_SAMPLER, the HTTP server instrumentation
 * (health, readiness and /metrics requests ignored; `token` query parameters
 * redacted) and the gRPC instrumentation (the long-lived WatchRouting and
 * Register streams and gRPC health checks ignored). Metrics do not go through
 * this SDK: every service serves its own on /metrics (metrics.ts); logs stay
 * JSON on stdout with trace ids (logger.ts).
 */
import { readFileSync } from "node:fs";
import { register } from "node:module";
import { ConfigError, loadSettings, tracingConfigured } from "./config.js";
import { processInstanceId } from "./ids.js";
import { tracingSdkStarted } from "./tracing.js";

export interface TracedService {
  /** service.name: `runnel-ingress`, `runnel-worker`, `runnel-control-plane`. */
  readonly name: string;
  /** Prefix of a generated instance id (the same main.ts uses). */
  readonly instancePrefix: string;
  /** URL of the service's package.json, for service.version. */
  readonly packageJson: URL;
}

/** Health checks and scrapes: never traced. */
const UNTRACED_PATHS = new Set(["/healthz", "/readyz", "/metrics"]);
/** gRPC methods that are not requests: streams that live as long as the process, and health checks. */
const UNTRACED_GRPC_METHODS = ["WatchRouting", "Register", "Check", "Watch"];

/** Starts tracing for `service` if the environment configures an exporter; returns whether it did. */
export async function startTracing(service: TracedService): Promise<boolean> {
  let settings: ReturnType<typeof loadSettings>;
  try {
    settings = loadSettings(process.env);
  } catch (error) {
    // main.ts reports an invalid environment with the message an operator can act on.
    if (error instanceof ConfigError) return false;
    throw error;
  }
  if (!tracingConfigured(settings)) return false;

  // Only modules an instrumentation hooks are wrapped (the message channel tells the loader which).
  const { createAddHookMessageChannel } = await import("import-in-the-middle");
  const { registerOptions, waitForAllMessagesAcknowledged } = createAddHookMessageChannel();
  register("import-in-the-middle/hook.mjs", import.meta.url, registerOptions);

  const [{ NodeSDK }, { HttpInstrumentation }, { GrpcInstrumentation }, { resourceFromAttributes }] = await Promise.all([
    import("@opentelemetry/sdk-node"),
    import("@opentelemetry/instrumentation-http"),
    import("@opentelemetry/instrumentation-grpc"),
    import("@opentelemetry/resources"),
  ]);
  const version = (JSON.parse(readFileSync(service.packageJson, "utf8")) as { version?: string }).version ?? "0.0.0";
  const sdk = new NodeSDK({
    // OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (the env detector) add to these and win over them.
    resource: resourceFromAttributes({
      "service.name": service.name,
      "service.version": version,
      "service.instance.id": processInstanceId(service.instancePrefix, settings.INSTANCE_ID),
    }),
    instrumentations: [
      new HttpInstrumentation({
        ignoreIncomingRequestHook: (request) => UNTRACED_PATHS.has((request.url ?? "").split("?")[0] ?? ""),
        // The services make no plain-http calls worth a span (providers go through undici, the control plane through gRPC).
        disableOutgoingRequestInstrumentation: true,
        // Resume tokens travel as ?token=...; the defaults cover signed cloud URLs.
        redactedQueryParamsServer: [
          "token",
          "sig",
          "Signature",
          "AWSAccessKeyId",
          "X-Goog-Signature",
          "X-Amz-Signature",
          "X-Amz-Credential",
          "X-Amz-Security-Token",
        ],
      }),
      new GrpcInstrumentation({ ignoreGrpcMethods: UNTRACED_GRPC_METHODS }),
    ],
    // Pulled from /metrics instead; no OTLP metrics or logs pipeline from this SDK.
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  tracingSdkStarted(() => sdk.shutdown());
  await waitForAllMessagesAcknowledged();
  return true;
}
