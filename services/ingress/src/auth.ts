/**
 * API keys and per-stream resume tokens. Keys are compared by their SHA-256
 * digests, so a lookup takes the same time whatever the key. A resume token
 * is an HMAC of the stream id: any ingress replica with the same secret can
 * check it, and it can be put in a URL (browsers' EventSource cannot send
 * headers).
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { type RunnelConfig, RunnelError } from "@runnel/shared";

export class Auth {
  readonly #keys: Map<string, string>;
  readonly #secret: Buffer;
  /** True when the config has no auth section: every request is allowed. */
  readonly open: boolean;
  /** True when the resume secret was generated here (tokens work only on this replica). */
  readonly ephemeralSecret: boolean;

  constructor(config: RunnelConfig["auth"]) {
    this.open = config === undefined;
    this.#keys = new Map((config?.apiKeys ?? []).map((entry) => [digest(entry.key), entry.name]));
    this.ephemeralSecret = config?.resumeSecret === undefined;
    this.#secret = config?.resumeSecret ? Buffer.from(config.resumeSecret) : randomBytes(32);
  }

  /**
   * The name of the key a request carries (`Authorization: Bearer <key>` or
   * `x-api-key: <key>`); "" when auth is off. Throws RUNNEL_ERR_UNAUTHORIZED.
   */
  identify(headers: Readonly<Record<string, string | string[] | undefined>>): string {
    if (this.open) return "";
    const key = presentedKey(headers);
    if (!key) throw new RunnelError("RUNNEL_ERR_UNAUTHORIZED", "Missing API key: send Authorization: Bearer <key>");
    const name = this.#keys.get(digest(key));
    if (!name) throw new RunnelError("RUNNEL_ERR_UNAUTHORIZED", "Incorrect API key provided");
    return name;
  }

  /** The key name if the request carries a valid key, else undefined (no throw). */
  tryIdentify(headers: Readonly<Record<string, string | string[] | undefined>>): string | undefined {
    if (this.open) return "";
    const key = presentedKey(headers);
    return key ? this.#keys.get(digest(key)) : undefined;
  }

  resumeToken(streamId: string): string {
    return createHmac("sha256", this.#secret).update(streamId).digest("base64url").slice(0, 32);
  }

  verifyToken(streamId: string, token: string | undefined): boolean {
    if (!token) return false;
    const expected = Buffer.from(this.resumeToken(streamId));
    const given = Buffer.from(token);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
}

function presentedKey(headers: Readonly<Record<string, string | string[] | undefined>>): string | undefined {
  const authorization = headers.authorization;
  if (typeof authorization === "string" && authorization.toLowerCase().startsWith("bearer ")) return authorization.slice(7).trim();
  const apiKey = headers["x-api-key"];
  return typeof apiKey === "string" && apiKey.length > 0 ? apiKey : undefined;
}

function digest(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}
