// `npm start`: bootstrap, then run the whole stack on an embedded nats-server
// (JetStream on, a temporary store) with the mock provider, until Ctrl-C or
// SIGTERM, which stop every child process.
import { join } from "node:path";
import { bootstrap, ROOT } from "./bootstrap.mjs";
import { startTraces } from "./traces.mjs";

const { natsServer } = bootstrap();
if (natsServer) process.env.NATS_SERVER_BIN = natsServer;

const { startNats, startStack } = await import(join(ROOT, "test", "dist", "index.js"));

let nats;
let stack;
let traces;
let stopping = false;

/** Stops everything started so far, then exits with `code`. Safe to call at any point, once. */
async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  process.stdout.write("\nstopping...\n");
  try {
    await stack?.stop();
    await nats?.stop();
    traces?.jaeger?.kill("SIGTERM");
  } finally {
    process.exit(code);
  }
}

// Installed before anything starts, so a signal during start-up stops what is already running.
process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));
// Last resort if this process dies some other way: no child may outlive it.
process.on("exit", () => {
  for (const child of [...(stack?.services.values() ?? [])].map((service) => service.process).concat(nats?.process ?? [], traces?.jaeger ?? [])) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});

const port = Number(process.env.PORT ?? 8080);
try {
  nats = await startNats({ forceLocal: !process.env.NATS_URL });
  traces = await startTraces();
  stack = await startStack({
    natsUrl: nats.url,
    ingressPort: port,
    mockPort: Number(process.env.MOCK_PORT ?? 9001),
    // Fixed, so the admin CLI (npm run runnel) finds it without being told.
    controlPlanePort: Number(process.env.GRPC_PORT ?? 50051),
    echo: true,
    env: {
      LOG_LEVEL: process.env.LOG_LEVEL ?? "info",
      ...traces.env,
      ...(process.env.RUNNEL_CONFIG ? { RUNNEL_CONFIG: process.env.RUNNEL_CONFIG } : {}),
    },
  });
} catch (error) {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  await shutdown(1);
}

process.stdout.write(
  [
    "",
    `Runnel is ready at ${stack.ingressUrl}  (NATS ${nats.url}, mock provider ${stack.mockUrl})`,
    "Try:",
    `  curl -N ${stack.ingressUrl}/v1/chat/completions -H 'content-type: application/json' \\`,
    `    -d '{"model":"mock","stream":true,"messages":[{"role":"user","content":"Hello"}]}'`,
    `Admin: npm run -s runnel -- streams ls   (control plane ${stack.controlPlaneTarget})`,
    traces.note,
    "Ctrl-C stops everything.",
    "",
  ].join("\n"),
);

for (const service of stack.services.values()) {
  service.process.once("exit", (code, signal) => {
    if (stopping) return;
    process.stderr.write(`${service.name} exited unexpectedly (${code ?? signal}); stopping the stack\n`);
    void shutdown(1);
  });
}
