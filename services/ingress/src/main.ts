#!/usr/bin/env node
/** Ingress entry point: build from the runtime, listen, shut down (out of rotation first). */
import { ControlPlaneLink, runService } from "@runnel/shared/runtime";
import { buildIngress } from "./app.js";

await runService("ingress", async ({ runtime, log, metrics, bus }) => {
  const { settings, config } = runtime;
  const ingress = buildIngress({
    bus,
    busOptions: config.bus,
    link: new ControlPlaneLink(settings.CONTROL_PLANE_URL, log),
    log,
    instanceId: runtime.instanceId,
    options: config.ingress,
    resumeSecret: config.auth?.resumeSecret,
    metrics,
    metricsOnAppPort: settings.METRICS_PORT === undefined,
    console: { ...config.console, traceQueryUrl: settings.RUNNEL_TRACE_QUERY_URL, traceLink: settings.RUNNEL_TRACE_LINK },
  });
  ingress.start();
  const address = await ingress.app.listen({ host: settings.HOST, port: settings.PORT });
  return {
    started: { address, port: settings.PORT },
    async shutdown() {
      // Out of rotation first, then give load balancers time to notice, then close.
      ingress.beginShutdown();
      await new Promise((resolve) => setTimeout(resolve, settings.SHUTDOWN_DELAY_MS));
      await ingress.close(config.ingress.drainTimeout);
    },
  };
});
