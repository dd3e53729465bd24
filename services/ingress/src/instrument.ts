/**
 * Preloaded before the service (`node --import ./services/ingress/dist/instrument.js ./services/ingress/dist/main.js`):
 * starts OpenTelemetry tracing before any module it instruments is loaded, or
 * does nothing at all when no exporter is configured (see @runnel/shared/tracing-sdk).
 */
import { startTracing } from "@runnel/shared/tracing-sdk";

await startTracing({ name: "runnel-ingress", instancePrefix: "ingress", packageJson: new URL("../package.json", import.meta.url) });
