/**
 * Preloaded before the service (`node --import ./services/control-plane/dist/instrument.js ./services/control-plane/dist/main.js`):
 * starts OpenTelemetry tracing before any module it instruments is loaded, or
 * does nothing at all when no exporter is configured (see @runnel/shared/tracing-sdk).
 */
import { startTracing } from "@runnel/shared/tracing-sdk";

await startTracing({ name: "runnel-control-plane", instancePrefix: "control-plane", packageJson: new URL("../package.json", import.meta.url) });
