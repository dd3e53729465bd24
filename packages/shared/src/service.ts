/**
 * How every service starts and stops, written once: the runtime (settings
 * from the environment and runnel.yaml, parsed once into one frozen object
 * with every override resolved), the logger, metrics, NATS and its topology,
 * the probe and metrics servers, and SIGTERM/SIGINT with a bounded shutdown.
 * A service's main.ts is `runService(name, (runtime) => ...)`: it builds its
 * app from the runtime and says how it is ready and how it stops.
 */
import { readFileSync } from "node:fs";
import { type Bus, connectNats, ensureTopology } from "./bus.js";
import { loadConfig, loadSettings, type RunnelConfig, type Settings, tracingConfigured } from "./config.js";
import { processInstanceId } from "./ids.js";
import { exitOnStartupError, onShutdownSignal, startMetricsServer, startProbeServer } from "./lifecycle.js";
import { createLogger, type Logger } from "./logger.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { reportTracing } from "./tracing.js";

export type ServiceName = "ingress" | "worker" | "control-plane";

/** The version every service reports (logs, metrics, the worker registry): @runnel/shared's, one per release. */
export const RUNNEL_VERSION: string = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

/** The health port of a service without an HTTP server of its own (`HEALTH_PORT` overrides it). */
const HEALTH_PORTS: Readonly<Record<Exclude<ServiceName, "ingress">, number>> = { "control-plane": 8081, worker: 8082 };

/** Everything a service is configured with, resolved once at start. */
export interface Runtime {
  readonly service: ServiceName;
  readonly version: string;
  readonly settings: Settings;
  readonly config: Readonly<RunnelConfig>;
  /** RUNNEL_CONFIG, if set: the file a reload reads again. */
  readonly configPath: string | undefined;
  readonly instanceId: string;
  /** The probe port (`/healthz`, `/readyz`) of the worker and the control plane. */
  readonly healthPort: number;
  /** The worker's concurrency: WORKER_CONCURRENCY over `worker.concurrency`. */
  readonly workerConcurrency: number;
  /** Reads and validates runnel.yaml again (a reload); throws ConfigError naming the field. */
  reloadConfig(): Readonly<RunnelConfig>;
}

/** Parses the environment and runnel.yaml for `service`. Throws ConfigError with a message an operator can act on. */
export function loadRuntime(service: ServiceName, env: Readonly<Record<string, string | undefined>>): Runtime {
  const settings = loadSettings(env);
  const config = loadConfig(env);
  return Object.freeze({
    service,
    version: RUNNEL_VERSION,
    settings,
    config,
    configPath: env.RUNNEL_CONFIG || undefined,
    instanceId: processInstanceId(service, settings.INSTANCE_ID),
    healthPort: settings.HEALTH_PORT ?? (service === "ingress" ? settings.PORT : HEALTH_PORTS[service]),
    workerConcurrency: settings.WORKER_CONCURRENCY ?? config.worker.concurrency,
    reloadConfig: () => loadConfig(env),
  });
}

/** What runService hands a service to build itself with. */
export interface ServiceContext {
  readonly runtime: Runtime;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly bus: Bus;
}

/** What a started service tells runService. */
export interface RunningService {
  /** Readiness, served on the health port (a service with its own HTTP server serves it itself: omit). */
  readonly ready?: () => { ready: boolean; reasons: string[] };
  /** Whether metrics go on the health port (when METRICS_PORT is unset); default true when `ready` is given. */
  readonly metricsOnHealthPort?: boolean;
  /** Fields of the "started" log line. */
  readonly started?: Record<string, unknown>;
  /** Stops the service (drain, close listeners); NATS is drained after it. */
  shutdown(signal: string): Promise<void>;
  /** How long `shutdown` may take before the process exits anyway (default 60 s). */
  readonly shutdownTimeoutMs?: number;
}

/**
 * Runs a service: runtime, logger, metrics, NATS and topology, then
 * `start`; the probe server when the service asks for one, the metrics
 * server on METRICS_PORT; SIGTERM/SIGINT run its shutdown, then drain NATS.
 * A failure at start exits 1 with a message naming what is wrong.
 */
export async function runService(service: ServiceName, start: (context: ServiceContext) => Promise<RunningService>): Promise<void> {
  let log: Logger | undefined;
  try {
    const runtime = loadRuntime(service, process.env);
    const { settings } = runtime;
    const logger = createLogger(`runnel-${service}`, settings.LOG_LEVEL, runtime.instanceId);
    log = logger;
    reportTracing(logger, tracingConfigured(settings));
    const metrics = createMetrics({ service: `runnel-${service}`, version: runtime.version, instanceId: runtime.instanceId });
    const nc = await connectNats(settings.NATS_URL, runtime.instanceId);
    const bus = await ensureTopology(nc, runtime.config.bus);
    const running = await start({ runtime, log: logger, metrics, bus });
    const onHealthPort = running.ready !== undefined && (running.metricsOnHealthPort ?? true) && settings.METRICS_PORT === undefined;
    const probes = running.ready
      ? await startProbeServer(settings.HOST, runtime.healthPort, {
          live: () => true,
          ready: running.ready,
          ...(onHealthPort ? { metrics: metrics.handle } : {}),
        })
      : undefined;
    const metricsServer = settings.METRICS_PORT === undefined ? undefined : await startMetricsServer(settings.HOST, settings.METRICS_PORT, metrics.handle);
    logger.info({ version: runtime.version, ...(probes ? { healthPort: probes.port } : {}), ...running.started }, `${service} started`);
    onShutdownSignal(
      logger,
      async (signal) => {
        await running.shutdown(signal);
        probes?.server.close();
        metricsServer?.server.close();
        await nc.drain();
      },
      running.shutdownTimeoutMs,
    );
  } catch (error) {
    exitOnStartupError(log, error);
  }
}
