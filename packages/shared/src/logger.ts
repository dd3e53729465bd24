/**
 * JSON logs (pino). Every line names the service and instance; lines about a
 * stream carry `stream_id` through a child logger. Credentials are redacted
 * wherever they might appear.
 */
import { type Logger, pino } from "pino";

export type { Logger };

export function createLogger(service: string, level: string, instance?: string): Logger {
  return pino({
    level,
    base: { service, instance },
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
