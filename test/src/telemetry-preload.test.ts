/**
 * The telemetry preload of each service (`node --import <service>/dist/instrument.js`):
 * with no exporter configured it loads no SDK at all (tracing costs nothing);
 * with one, the SDK is running before the application's modules load, so an
 * ESM import of @grpc/grpc-js after it comes out instrumented.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, test } from "node:test";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { REPO_ROOT } from "@runnel/launcher";

const run = promisify(execFile);
const PROBE = join(REPO_ROOT, "test", "fixtures", "telemetry-probe.mjs");

async function probe(service: string, env: Record<string, string>): Promise<{ sdkLoaded: boolean; grpcInstrumented: boolean }> {
  const preload = pathToFileURL(join(REPO_ROOT, "services", service, "dist", "instrument.js")).href;
  // Only PATH and what the case sets: no OTEL_* from the caller's shell.
  const { stdout } = await run(process.execPath, ["--import", preload, PROBE], { env: { PATH: process.env.PATH ?? "", ...env }, timeout: 30_000 });
  return JSON.parse(stdout) as { sdkLoaded: boolean; grpcInstrumented: boolean };
}

describe("telemetry preload", () => {
  for (const service of ["ingress", "worker", "control-plane"]) {
    test(`${service}: nothing configured, nothing loaded`, async () => {
      assert.deepEqual(await probe(service, {}), { sdkLoaded: false, grpcInstrumented: false });
    });
  }

  test("OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true: nothing loaded either", async () => {
    assert.deepEqual(await probe("worker", { OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1" }), {
      sdkLoaded: false,
      grpcInstrumented: false,
    });
    assert.deepEqual(await probe("worker", { OTEL_SDK_DISABLED: "true", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1" }), {
      sdkLoaded: false,
      grpcInstrumented: false,
    });
  });

  test("an OTLP endpoint starts the SDK before the app, and ESM imports after it are instrumented", async () => {
    // Nothing listens on port 1: the exporter only fails when it exports, and the probe exits first.
    assert.deepEqual(await probe("control-plane", { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1" }), { sdkLoaded: true, grpcInstrumented: true });
    assert.deepEqual(await probe("ingress", { OTEL_TRACES_EXPORTER: "console" }), { sdkLoaded: true, grpcInstrumented: true });
  });
});
