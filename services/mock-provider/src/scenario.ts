/**
 * A scenario says how the mock answers one request. It is read from the
 * request's `model` string so that any OpenAI client can pick it, e.g.
 * `mock`, `mock?tokens=100&ttft=50&itl=5&seed=3`, `mock?fail=500`,
 * `mock?fail=stall&after=3`. Pure: no I/O, no clock.
 */
import { DEFAULT_SEED, DEFAULT_TOKENS } from "./text.js";

/** Every failure the mock can inject (the `fail` key). */
export const FAIL_MODES = [
  "429",
  "429-no-retry-after",
  "500",
  "503",
  "500-once",
  "reset",
  "no-response",
  "stall",
  "cut",
  "malformed",
  "stream-error",
  "no-done",
  "context-length",
  "content-policy",
  "auth",
  "no-prefill",
  "outage",
] as const;

/** One injected failure; see FAIL_MODES and the README of the service. */
export type FailMode = (typeof FAIL_MODES)[number];

/** How the mock answers one request. */
export interface Scenario {
  /** Completion length in tokens (before `max_tokens`). */
  readonly tokens: number;
  /** Delay before the first content token, ms. */
  readonly ttftMs: number;
  /** Delay between two content tokens, ms. */
  readonly itlMs: number;
  /** Seed of the generated text. */
  readonly seed: number;
  /** The injected failure, if any. */
  readonly fail: FailMode | null;
  /** Token index at which a mid-stream failure (stall, cut, malformed, stream-error) happens. */
  readonly after: number;
  /** `Retry-After` seconds of a 429. */
  readonly retryAfterSeconds: number;
  /** Identifies the request series of `fail=500-once`, and the switch of `fail=outage`. */
  readonly key: string | null;
  /** `always`: send usage even when the request did not ask for it. */
  readonly usage: "always" | "requested";
}

/** Server-wide defaults a scenario falls back to. */
export interface ScenarioDefaults {
  readonly ttftMs: number;
  readonly itlMs: number;
  readonly tokens: number;
}

/** Largest `tokens` a scenario may ask for. */
export const MAX_TOKENS = 1_000_000;
/** Largest delay (`ttft`, `itl`) a scenario may ask for, ms. */
export const MAX_DELAY_MS = 3_600_000;

/** Default token index of a mid-stream failure. */
export const DEFAULT_AFTER = 2;
/** Default `Retry-After` of a 429, seconds. */
export const DEFAULT_RETRY_AFTER_SECONDS = 1;

/** The scenario is malformed; `message` is meant for the caller (the server answers 400 with it). */
export class ScenarioError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ScenarioError";
  }
}

const KEYS = new Set(["tokens", "ttft", "itl", "seed", "fail", "after", "retry_after", "key", "usage"]);

function isFailMode(value: string): value is FailMode {
  return (FAIL_MODES as readonly string[]).includes(value);
}

function integer(name: string, text: string, max: number): number {
  if (!/^\d+$/.test(text)) throw new ScenarioError(`model scenario: ${name}=${text} is not a non-negative integer`);
  const value = Number(text);
  if (value > max) throw new ScenarioError(`model scenario: ${name}=${text} is above the limit of ${max}`);
  return value;
}

/**
 * Reads the scenario from a `model` string: everything after the first `?`
 * is a query string of the keys `tokens`, `ttft`, `itl`, `seed`, `fail`,
 * `after`, `retry_after`, `key` and `usage`. Throws ScenarioError naming the
 * wrong key or value (unknown keys are errors, so a typo is not silently ignored).
 */
export function parseScenario(model: string, defaults: Partial<ScenarioDefaults> = {}): Scenario {
  const query = model.includes("?") ? model.slice(model.indexOf("?") + 1) : "";
  const params = new URLSearchParams(query);
  const seen = new Set<string>();
  for (const name of params.keys()) {
    if (!KEYS.has(name)) throw new ScenarioError(`model scenario: unknown key "${name}" (known: ${[...KEYS].join(", ")})`);
    if (seen.has(name)) throw new ScenarioError(`model scenario: key "${name}" is given twice`);
    seen.add(name);
  }
  const read = (name: string): string | null => params.get(name);

  const failText = read("fail");
  let fail: FailMode | null = null;
  if (failText !== null) {
    if (!isFailMode(failText)) {
      throw new ScenarioError(`model scenario: unknown fail mode "${failText}" (known: ${FAIL_MODES.join(", ")}; for a slow first token use ttft=<ms>)`);
    }
    fail = failText;
  }

  const usageText = read("usage");
  if (usageText !== null && usageText !== "always") throw new ScenarioError(`model scenario: usage=${usageText} is not supported (only usage=always)`);

  const key = read("key");
  if (fail === "500-once" && (key === null || key === ""))
    throw new ScenarioError("model scenario: fail=500-once needs key=<name> to tell request series apart");
  if (fail === "outage" && (key === null || key === ""))
    throw new ScenarioError("model scenario: fail=outage needs key=<name>, the outage switched on and off by PUT and DELETE /_mock/outages/<name>");

  const number = (name: string, fallback: number, max: number): number => {
    const text = read(name);
    return text === null ? fallback : integer(name, text, max);
  };

  return {
    tokens: number("tokens", defaults.tokens ?? DEFAULT_TOKENS, MAX_TOKENS),
    ttftMs: number("ttft", defaults.ttftMs ?? 0, MAX_DELAY_MS),
    itlMs: number("itl", defaults.itlMs ?? 0, MAX_DELAY_MS),
    seed: number("seed", DEFAULT_SEED, 0xffffffff),
    fail,
    after: number("after", DEFAULT_AFTER, MAX_TOKENS),
    retryAfterSeconds: number("retry_after", DEFAULT_RETRY_AFTER_SECONDS, 86_400),
    key: key === null || key === "" ? null : key,
    usage: usageText === "always" ? "always" : "requested",
  };
}
