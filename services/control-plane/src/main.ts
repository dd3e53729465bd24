#!/usr/bin/env node
/** Control plane entry point: build from the runtime, listen, reload on SIGHUP or a file change, shut down. */
import { observeRouteHealth, runService } from "@runnel/shared/runtime";
import { buildControlPlane } from "./app.js";
import { ConfigReloader } from "./config-reloader.js";

await runService("control-plane", async ({ runtime, log, metrics, bus }) => {
  const { settings } = runtime;
  const app = buildControlPlane({ config: runtime.config, bus, log, instanceId: runtime.instanceId });
  observeRouteHealth(metrics.meter, () => app.health.status());
  const grpcPort = await app.listen(settings.HOST, settings.GRPC_PORT);
  // SIGHUP or a change of the file: a valid config is served, a bad one rejected (the old one stays).
  const reloader = new ConfigReloader({ load: runtime.reloadConfig, snapshots: app.snapshots, log, path: runtime.configPath });
  reloader.watch();
  process.on("SIGHUP", () => reloader.reload("SIGHUP"));
  return {
    ready: () => {
      const ready = app.ready();
      return { ready, reasons: ready ? [] : ["shutting down, or not connected to NATS"] };
    },
    started: { grpcPort, routingVersion: app.snapshots.current.version },
    async shutdown() {
      // NOT_SERVING first, then give clients time to move, then close.
      app.beginShutdown();
      reloader.close();
      await new Promise((resolve) => setTimeout(resolve, settings.SHUTDOWN_DELAY_MS));
      await app.close();
    },
  };
});
