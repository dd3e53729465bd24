#!/usr/bin/env node
/** Worker entry point: config, dependencies, start, signals. */
import { hostname } from "node:os";
import {
  ControlPlaneLink,
  connectNats,
  createLogger,
  ensureTopology,
  exitOnStartupError,
  type Logger,
  loadConfig,
  loadSettings,
  newInstanceId,
  onShutdownSignal,
  startProbeServer,
} from "@runnel/shared";
import { buildWorker } from "./app.js";

let log: Logger | undefined;
try {
  const settings = loadSettings(process.env);
  const config = loadConfig(process.env);
  const workerId = settings.INSTANCE_ID ?? newInstanceId("worker", hostname());
  const logger = createLogger("runnel-worker", settings.LOG_LEVEL, workerId);
  log = logger;
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
  });
  worker.start();
  const probes = await startProbeServer(settings.HOST, settings.HEALTH_PORT ?? 8082, { live: () => true, ready: () => worker.ready() });
  logger.info({ healthPort: probes.port, concurrency: settings.WORKER_CONCURRENCY ?? config.worker.concurrency }, "worker started");
  onShutdownSignal(
    logger,
    async () => {
      await worker.drain(config.worker.drainTimeout);
      probes.server.close();
      await nc.drain();
    },
    config.worker.drainTimeout + 10_000,
  );
} catch (error) {
  exitOnStartupError(log, error);
}
