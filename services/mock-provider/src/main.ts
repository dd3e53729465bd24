#!/usr/bin/env node
/**
 * Runs the mock provider as a process: settings from the environment, one
 * JSON log line when listening, a clean close on SIGTERM/SIGINT.
 */
import { createLogger, exitOnStartupError, onShutdownSignal } from "@runnel/shared/runtime";
import { buildMockProvider } from "./app.js";
import { loadMockConfig, type MockConfig } from "./config.js";

const SERVICE = "runnel-mock-provider";

let config: MockConfig;
try {
  config = loadMockConfig(process.env);
} catch (error) {
  exitOnStartupError(createLogger(SERVICE, "info"), error);
}

const log = createLogger(SERVICE, config.logLevel);
const app = buildMockProvider({ defaults: config.defaults, log: ({ level, msg, ...fields }) => log[level](fields, msg) });
try {
  const port = await app.listen(config.port, config.host);
  log.info({ port, host: config.host, defaults: config.defaults }, "listening");
} catch (error) {
  exitOnStartupError(log, error);
}
onShutdownSignal(log, async () => {
  await app.close();
});
