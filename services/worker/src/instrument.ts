/**
 * Preloaded before the service (`node --import ./services/worker/dist/instrument.js ./services/worker/dist/main.js`):
 * starts OpenTelemetry tracing before any module it instruments is loaded, or
 * does nothing at all when no exporter is configured (see @runnel/shared/tracing-sdk).
 */
import { startTracing } from "@runnel/shared/tracing-sdk";

await startTracing({ name: "runnel-worker", instancePrefix: "worker", packageJson: new URL("../package.json", import.meta.url) });
