import { randomBytes } from "node:crypto";

/** A new stream id: 128 random bits, base64url (subject- and URL-safe, 22 characters). */
export function newStreamId(): string {
  return randomBytes(16).toString("base64url");
}

/** An instance id for logs and registration: host name plus a short random suffix. */
export function newInstanceId(prefix: string, hostname: string): string {
  return `${prefix}-${hostname}-${randomBytes(3).toString("hex")}`;
}
