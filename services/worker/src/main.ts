#!/usr/bin/env node
/** Worker entry point: config, dependencies, start, signals. */
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
  startProbeServer,
  tracingConfigured,
} from "@runnel/shared";
import { buildWorker } from "./app.js";
import { observeJobs, observeWorkerLoad, WorkerInstruments } from "./telemetry.js";

let log: Logger | undefined;
try {
  const settings = loadSettings(process.env);
  const config = loadConfig(process.env);
  const workerId = processInstanceId("worker", settings.INSTANCE_ID);
  const logger = createLogger("runnel-worker", settings.LOG_LEVEL, workerId);
  log = logger;
  reportTracing(logger, tracingConfigured(settings));
  const metrics = createMetrics({ service: "runnel-worker", version: "0.1.0", instanceId: workerId });
  const nc = await connectNats(settings.NATS_URL, workerId);
  const bus = await ensureTopology(nc, config.bus);
  const link = new ControlPlaneLink(settings.CONTROL_PLANE_URL, logger);
  const worker = buildWorker({
    bus,
    link,
    log: logger,
    workerId,
    version: "0.1.0",
    concurrency: settings.WORKER_CONCURRENCY ?? config.worker.concurrency,
    ackWaitMs: config.bus.jobAckWait,
    observe: observeJobs(new WorkerInstruments(metrics.meter)),
  });
  observeWorkerLoad(metrics.meter, () => ({ inFlight: worker.inFlight, capacity: settings.WORKER_CONCURRENCY ?? config.worker.concurrency }));
  worker.start();
  const probes = await startProbeServer(settings.HOST, settings.HEALTH_PORT ?? 8082, {
    live: () => true,
    ready: () => worker.ready(),
    ...(settings.METRICS_PORT === undefined ? { metrics: metrics.handle } : {}),
  });
  const metricsServer = settings.METRICS_PORT === undefined ? undefined : await startMetricsServer(settings.HOST, settings.METRICS_PORT, metrics.handle);
  logger.info({ healthPort: probes.port, concurrency: settings.WORKER_CONCURRENCY ?? config.worker.concurrency }, "worker started");
  onShutdownSignal(
    logger,
    async () => {
      await worker.drain(config.worker.drainTimeout);
      probes.server.close();
      metricsServer?.server.close();
      await nc.drain();
    },
    config.worker.drainTimeout + 10_000,
  );
} catch (error) {
  exitOnStartupError(log, error);
}
