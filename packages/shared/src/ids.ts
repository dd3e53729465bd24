import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

/** A new stream id: 128 random bits, base64url (subject- and URL-safe, 22 characters). */
export function newStreamId(): string {
  return randomBytes(16).toString("base64url");
}

/** An instance id for logs and registration: host name plus a short random suffix. */
export function newInstanceId(prefix: string, hostname: string): string {
  return `${prefix}-${hostname}-${randomBytes(3).toString("hex")}`;
}

let processInstance: string | undefined;

/**
 * This process's instance id: `configured` (INSTANCE_ID) when set, else a new
 * `<prefix>-<host>-<random>`, the same on every call, so the telemetry preload
 * (the traces' service.instance.id) and main.ts (logs, worker registry) agree.
 */
export function processInstanceId(prefix: string, configured: string | undefined): string {
  processInstance ??= configured ?? newInstanceId(prefix, hostname());
  return processInstance;
}
