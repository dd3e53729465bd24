#!/usr/bin/env node
/** Control plane entry point: config, dependencies, listen, signals. */
import { hostname } from "node:os";
import {
  ConfigError,
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
import { buildControlPlane } from "./app.js";

let log: Logger | undefined;
try {
  const settings = loadSettings(process.env);
  const config = loadConfig(process.env);
  const instanceId = settings.INSTANCE_ID ?? newInstanceId("control-plane", hostname());
  const logger = createLogger("runnel-control-plane", settings.LOG_LEVEL, instanceId);
  log = logger;
  const nc = await connectNats(settings.NATS_URL, instanceId);
  const bus = await ensureTopology(nc, config.bus);
  const app = buildControlPlane({ config, bus, log: logger, instanceId });
  const grpcPort = await app.listen(settings.HOST, settings.GRPC_PORT);
  const probes = await startProbeServer(settings.HOST, settings.HEALTH_PORT ?? 8081, {
    live: () => true,
    ready: () => {
      const ready = app.ready();
      return { ready, reasons: ready ? [] : ["shutting down or NATS closed"] };
    },
  });
  logger.info({ grpcPort, healthPort: probes.port, routingVersion: app.snapshots.current.version }, "control plane listening");

  process.on("SIGHUP", () => {
    try {
      const next = loadConfig(process.env);
      const changed = app.snapshots.replace(next);
      logger.info({ changed, routingVersion: app.snapshots.current.version }, "config reloaded");
    } catch (error) {
      logger.error({ err: error instanceof ConfigError ? error.message : error }, "config reload rejected; the running config stays");
    }
  });

  onShutdownSignal(logger, async () => {
    // NOT_SERVING first, then give clients time to move, then close.
    app.beginShutdown();
    await new Promise((resolve) => setTimeout(resolve, settings.SHUTDOWN_DELAY_MS));
    await app.close();
    probes.server.close();
    await nc.drain();
  });
} catch (error) {
  exitOnStartupError(log, error);
}
