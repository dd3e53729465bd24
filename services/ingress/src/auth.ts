/**
 * API keys and per-stream resume tokens.
 *
 * The keys come with the routing snapshot (`client_auth`: each key's name
 * and SHA-256 digest), so adding or revoking a key in runnel.yaml reaches
 * every ingress on the control plane's reload, like a route. A request's key
 * is looked up by its digest, so the lookup takes the same time whatever the
 * key. Until the first snapshot, and if a snapshot carries no client auth
 * (a control plane too old to send it), every request is refused: the
 * gateway fails closed, never open.
 *
 * A resume token is an HMAC of the stream id: any ingress replica with the
 * same secret can check it, and it can be put in a URL (browsers'
 * EventSource cannot send headers).
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { RunnelError } from "@runnel/shared/contracts";
import { apiKeyDigest, type ClientAuth } from "@runnel/shared/domain";

export interface AuthOptions {
  /** Signs resume tokens; the same on every replica. Absent: a random one (tokens work on this replica only). */
  readonly resumeSecret?: string | undefined;
}

/** What the last snapshot said: open, or these keys (digest in hex → name) and which of them are admin keys. */
type KeyState = { readonly open: true } | { readonly open: false; readonly keys: ReadonlyMap<string, string>; readonly admins: ReadonlySet<string> };

export class Auth {
  #state: KeyState | undefined;
  readonly #secret: Buffer;
  /** True when the resume secret was generated here (tokens work only on this replica). */
  readonly ephemeralSecret: boolean;

  constructor(options: AuthOptions = {}) {
    this.ephemeralSecret = options.resumeSecret === undefined;
    this.#secret = options.resumeSecret ? Buffer.from(options.resumeSecret) : randomBytes(32);
  }

  /**
   * Takes the keys of a new snapshot. Returns what changed, for the log:
   * `open` when the gateway just became open, else the number of keys.
   */
  apply(clientAuth: ClientAuth | undefined): { open: boolean; keys: number; changed: boolean } {
    const before = this.#state;
    if (!clientAuth) {
      this.#state = { open: false, keys: new Map(), admins: new Set() };
    } else if (!clientAuth.enabled) {
      this.#state = { open: true };
    } else {
      const hex = (sha256: Uint8Array) => Buffer.from(sha256).toString("hex");
      this.#state = {
        open: false,
        keys: new Map(clientAuth.keys.map((key) => [hex(key.sha256), key.name])),
        admins: new Set(clientAuth.keys.filter((key) => key.admin).map((key) => hex(key.sha256))),
      };
    }
    const after = this.#state;
    const changed =
      before === undefined ||
      before.open !== after.open ||
      (!before.open &&
        !after.open &&
        (before.keys.size !== after.keys.size ||
          [...after.keys].some(([digest, name]) => before.keys.get(digest) !== name) ||
          before.admins.size !== after.admins.size ||
          [...after.admins].some((digest) => !before.admins.has(digest))));
    return { open: after.open, keys: after.open ? 0 : after.keys.size, changed };
  }

  /** True when the last snapshot had no auth section: every request is allowed. */
  get open(): boolean {
    return this.#state?.open === true;
  }

  /** Whether keys have arrived (readiness). */
  get known(): boolean {
    return this.#state !== undefined;
  }

  /**
   * The name of the key a request carries (`Authorization: Bearer <key>` or
   * `x-api-key: <key>`); "" when auth is off. Throws RUNNEL_ERR_UNAUTHORIZED
   * (RUNNEL_ERR_NOT_READY before the first snapshot).
   */
  identify(headers: Readonly<Record<string, string | string[] | undefined>>): string {
    const state = this.#state;
    if (!state) throw new RunnelError("RUNNEL_ERR_NOT_READY", "no API keys received from the control plane yet");
    if (state.open) return "";
    const key = presentedKey(headers);
    if (!key) throw new RunnelError("RUNNEL_ERR_UNAUTHORIZED", "Missing API key: send Authorization: Bearer <key>");
    const name = state.keys.get(digest(key));
    if (!name) throw new RunnelError("RUNNEL_ERR_UNAUTHORIZED", "Incorrect API key provided");
    return name;
  }

  /** How many admin keys the last snapshot has (0 when auth is off or before the first snapshot). */
  get adminKeys(): number {
    const state = this.#state;
    return state && !state.open ? state.admins.size : 0;
  }

  /**
   * The name of the admin key a request carries (the console's inspector).
   * Throws RUNNEL_ERR_UNAUTHORIZED: 401 for a missing or unknown key, 403 for
   * a valid key that is not an admin key. With auth off it returns "": the
   * caller decides whether an open gateway opens the inspector too.
   */
  identifyAdmin(headers: Readonly<Record<string, string | string[] | undefined>>): string {
    const name = this.identify(headers);
    const state = this.#state;
    if (!state || state.open) return name;
    const key = presentedKey(headers);
    if (key === undefined || !state.admins.has(digest(key))) {
      throw new RunnelError("RUNNEL_ERR_UNAUTHORIZED", `The API key ${name} is not an admin key (runnel.yaml auth.apiKeys[].admin)`, { httpStatus: 403 });
    }
    return name;
  }

  /** The key name if the request carries a valid key, else undefined (no throw). */
  tryIdentify(headers: Readonly<Record<string, string | string[] | undefined>>): string | undefined {
    const state = this.#state;
    if (!state) return undefined;
    if (state.open) return "";
    const key = presentedKey(headers);
    return key ? state.keys.get(digest(key)) : undefined;
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
  return Buffer.from(apiKeyDigest(key)).toString("hex");
}
