#!/usr/bin/env node
/** Worker entry point: build from the runtime, start, drain on shutdown. */
import { ControlPlaneLink, runService } from "@runnel/shared/runtime";
import { buildWorker } from "./app.js";
import { observeJobs, observeWorkerLoad, WorkerInstruments } from "./telemetry.js";

await runService("worker", async ({ runtime, log, metrics, bus }) => {
  const { config, workerConcurrency } = runtime;
  const worker = buildWorker({
    bus,
    link: new ControlPlaneLink(runtime.settings.CONTROL_PLANE_URL, log),
    log,
    workerId: runtime.instanceId,
    version: runtime.version,
    concurrency: workerConcurrency,
    ackWaitMs: config.bus.jobAckWait,
    observe: observeJobs(new WorkerInstruments(metrics.meter)),
  });
  observeWorkerLoad(metrics.meter, () => ({ inFlight: worker.inFlight, capacity: workerConcurrency }));
  worker.start();
  return {
    ready: () => worker.ready(),
    started: { concurrency: workerConcurrency },
    shutdown: () => worker.drain(config.worker.drainTimeout),
    shutdownTimeoutMs: config.worker.drainTimeout + 10_000,
  };
});
