/**
 * Process lifecycle shared by every service: a tiny HTTP server for /healthz
 * (alive), /readyz (ready to serve) and /metrics (Prometheus text) where a
 * service has no HTTP server of its own, and SIGTERM/SIGINT handling that
 * runs the service's shutdown once, flushes buffered spans, with a forced
 * exit if it hangs.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "./logger.js";
import { flushTelemetry } from "./tracing.js";

export interface Probes {
  /** Alive: the event loop runs. Failing it gets the process restarted. */
  live(): boolean;
  /** Ready: can serve now. Failing it only takes the instance out of rotation. */
  ready(): { ready: boolean; reasons: string[] };
  /** Answers GET /metrics (createMetrics(...).handle); absent: 404. */
  metrics?(request: IncomingMessage, response: ServerResponse): void;
}

export async function startProbeServer(host: string, port: number, probes: Probes): Promise<{ server: Server; port: number }> {
  const server = createServer((request, response) => {
    const path = request.url?.split("?")[0];
    if (path === "/metrics" && probes.metrics) {
      probes.metrics(request, response);
      return;
    }
    let status = 404;
    let body: unknown = { error: "not found" };
    if (path === "/healthz") {
      const live = probes.live();
      status = live ? 200 : 503;
      body = { status: live ? "ok" : "failing" };
    } else if (path === "/readyz") {
      const { ready, reasons } = probes.ready();
      status = ready ? 200 : 503;
      body = { status: ready ? "ready" : "not ready", reasons };
    }
    response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/** Serves GET /metrics alone on its own port (METRICS_PORT), for deployments that keep scrapes off the API and probe ports. */
export async function startMetricsServer(
  host: string,
  port: number,
  metrics: (request: IncomingMessage, response: ServerResponse) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer((request, response) => {
    if (request.url?.split("?")[0] === "/metrics") metrics(request, response);
    else response.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: "not found" }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/** Runs `shutdown` once on SIGTERM or SIGINT; exits 0 when it resolves, 1 if it throws or exceeds `timeoutMs`. */
export function onShutdownSignal(log: Logger, shutdown: (signal: string) => Promise<void>, timeoutMs = 60_000): void {
  let started = false;
  const handle = (signal: NodeJS.Signals) => {
    if (started) return;
    started = true;
    log.info({ signal }, "shutting down");
    const timer = setTimeout(() => {
      log.error({ timeoutMs }, "shutdown did not finish in time; exiting");
      process.exit(1);
    }, timeoutMs);
    timer.unref();
    shutdown(signal)
      .then(
        () => {
          log.info("stopped");
          return 0;
        },
        (error: unknown) => {
          log.error({ err: error }, "shutdown failed");
          return 1;
        },
      )
      // Spans still in the exporter's buffer go out before the process does.
      .then(async (code) => {
        await flushTelemetry();
        process.exit(code);
      });
  };
  process.on("SIGTERM", handle);
  process.on("SIGINT", handle);
}

/** Fails fast at boot with a message an operator can act on. */
export function exitOnStartupError(log: Logger | undefined, error: unknown): never {
  const message = error instanceof Error ? error.message : String(error);
  if (log) log.fatal({ err: error }, `cannot start: ${message}`);
  else process.stderr.write(`cannot start: ${message}\n`);
  process.exit(1);
}
