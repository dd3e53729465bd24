#!/usr/bin/env node
/** Ingress entry point: config, dependencies, listen, signals. */
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
} from "@runnel/shared";
import { buildIngress } from "./app.js";

let log: Logger | undefined;
try {
  const settings = loadSettings(process.env);
  const config = loadConfig(process.env);
  const instanceId = settings.INSTANCE_ID ?? newInstanceId("ingress", hostname());
  const logger = createLogger("runnel-ingress", settings.LOG_LEVEL, instanceId);
  log = logger;
  const nc = await connectNats(settings.NATS_URL, instanceId);
  const bus = await ensureTopology(nc, config.bus);
  const link = new ControlPlaneLink(settings.CONTROL_PLANE_URL, logger);
  const ingress = buildIngress({
    bus,
    busOptions: config.bus,
    link,
    log: logger,
    instanceId,
    options: config.ingress,
    ...(config.auth ? { auth: config.auth } : {}),
  });
  ingress.start();
  const address = await ingress.app.listen({ host: settings.HOST, port: settings.PORT });
  logger.info({ address, port: settings.PORT }, "ingress listening");
  onShutdownSignal(logger, async () => {
    // Out of rotation first, then give load balancers time to notice, then close.
    ingress.beginShutdown();
    await new Promise((resolve) => setTimeout(resolve, settings.SHUTDOWN_DELAY_MS));
    await ingress.close(10_000);
    await nc.drain();
  });
} catch (error) {
  exitOnStartupError(log, error);
}
