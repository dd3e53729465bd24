/**
 * JSON logs (pino). Every line names the service and instance; lines about a
 * stream carry `stream_id` through a child logger, and every line written
 * while a span is active carries its `trace_id` and `span_id` (a mixin reading
 * the OpenTelemetry context, so logs and traces join). Credentials are
 * redacted wherever they might appear; prompt and completion text is never
 * logged.
 */
import { type Logger, pino } from "pino";
import { activeTraceIds } from "./tracing.js";

export type { Logger };

export function createLogger(service: string, level: string, instance?: string): Logger {
  return pino({
    level,
    base: { service, instance },
    mixin: activeTraceIds,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: {
      paths: [
        "apiKey",
        "*.apiKey",
        "*.*.apiKey",
        "headers.authorization",
        "*.headers.authorization",
        "authorization",
        "*.authorization",
        "x-api-key",
        "*.x-api-key",
      ],
      censor: "[redacted]",
    },
  });
}
