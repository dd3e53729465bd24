#!/usr/bin/env node
/** Control plane entry point: config, dependencies, listen, signals. */
import {
  connectNats,
  createLogger,
  createMetrics,
  ensureTopology,
  exitOnStartupError,
  type Logger,
  loadConfig,
  loadSettings,
  observeRouteHealth,
  onShutdownSignal,
  processInstanceId,
  reportTracing,
  startMetricsServer,
  startProbeServer,
  tracingConfigured,
} from "@runnel/shared";
import { buildControlPlane } from "./app.js";
import { ConfigReloader } from "./config-reloader.js";

let log: Logger | undefined;
try {
  const settings = loadSettings(process.env);
  const config = loadConfig(process.env);
  const instanceId = processInstanceId("control-plane", settings.INSTANCE_ID);
  const logger = createLogger("runnel-control-plane", settings.LOG_LEVEL, instanceId);
  log = logger;
  reportTracing(logger, tracingConfigured(settings));
  const metrics = createMetrics({ service: "runnel-control-plane", version: "0.1.0", instanceId });
  const nc = await connectNats(settings.NATS_URL, instanceId);
  const bus = await ensureTopology(nc, config.bus);
  const app = buildControlPlane({ config, bus, log: logger, instanceId });
  observeRouteHealth(metrics.meter, () => app.health.status());
  const grpcPort = await app.listen(settings.HOST, settings.GRPC_PORT);
  const probes = await startProbeServer(settings.HOST, settings.HEALTH_PORT ?? 8081, {
    live: () => true,
    ready: () => {
      const ready = app.ready();
      return { ready, reasons: ready ? [] : ["shutting down, or not connected to NATS"] };
    },
    ...(settings.METRICS_PORT === undefined ? { metrics: metrics.handle } : {}),
  });
  const metricsServer = settings.METRICS_PORT === undefined ? undefined : await startMetricsServer(settings.HOST, settings.METRICS_PORT, metrics.handle);
  logger.info({ grpcPort, healthPort: probes.port, routingVersion: app.snapshots.current.version }, "control plane listening");

  // SIGHUP or a change of the file: a valid config is served, a bad one rejected (the old one stays).
  const reloader = new ConfigReloader({
    load: () => loadConfig(process.env),
    snapshots: app.snapshots,
    log: logger,
    path: process.env.RUNNEL_CONFIG || undefined,
  });
  reloader.watch();
  process.on("SIGHUP", () => reloader.reload("SIGHUP"));

  onShutdownSignal(logger, async () => {
    // NOT_SERVING first, then give clients time to move, then close.
    app.beginShutdown();
    reloader.close();
    await new Promise((resolve) => setTimeout(resolve, settings.SHUTDOWN_DELAY_MS));
    await app.close();
    probes.server.close();
    metricsServer?.server.close();
    await nc.drain();
  });
} catch (error) {
  exitOnStartupError(log, error);
}
