#!/usr/bin/env node
/** Ingress entry point: config, dependencies, listen, signals. */
import {
  ControlPlaneLink,
  connectNats,
  createLogger,
  createMetrics,
  ensureTopology,
  exitOnStartupError,
  type Logger,
  loadConfig,
  loadSettings,
  onShutdownSignal,
  processInstanceId,
  reportTracing,
  startMetricsServer,
  tracingConfigured,
} from "@runnel/shared";
import { buildIngress } from "./app.js";

let log: Logger | undefined;
try {
  const settings = loadSettings(process.env);
  const config = loadConfig(process.env);
  const instanceId = processInstanceId("ingress", settings.INSTANCE_ID);
  const logger = createLogger("runnel-ingress", settings.LOG_LEVEL, instanceId);
  log = logger;
  reportTracing(logger, tracingConfigured(settings));
  const nc = await connectNats(settings.NATS_URL, instanceId);
  const bus = await ensureTopology(nc, config.bus);
  const link = new ControlPlaneLink(settings.CONTROL_PLANE_URL, logger);
  const metrics = createMetrics({ service: "runnel-ingress", version: "0.1.0", instanceId });
  const ingress = buildIngress({
    bus,
    busOptions: config.bus,
    link,
    log: logger,
    instanceId,
    options: config.ingress,
    resumeSecret: config.auth?.resumeSecret,
    metrics,
    metricsOnAppPort: settings.METRICS_PORT === undefined,
    console: { ...config.console, traceQueryUrl: settings.RUNNEL_TRACE_QUERY_URL, traceLink: settings.RUNNEL_TRACE_LINK },
  });
  ingress.start();
  const address = await ingress.app.listen({ host: settings.HOST, port: settings.PORT });
  logger.info({ address, port: settings.PORT }, "ingress listening");
  const metricsServer = settings.METRICS_PORT === undefined ? undefined : await startMetricsServer(settings.HOST, settings.METRICS_PORT, metrics.handle);
  onShutdownSignal(logger, async () => {
    // Out of rotation first, then give load balancers time to notice, then close.
    ingress.beginShutdown();
    await new Promise((resolve) => setTimeout(resolve, settings.SHUTDOWN_DELAY_MS));
    await ingress.close(config.ingress.drainTimeout);
    metricsServer?.server.close();
    await nc.drain();
  });
} catch (error) {
  exitOnStartupError(log, error);
}
