/**
 * The mock provider's process settings, read from the environment once at
 * start. The only module that looks at environment variables; it is handed
 * the env object (`process.env` in main.ts) rather than reading it itself.
 */
import type { ScenarioDefaults } from "./scenario.js";

/** Log levels pino knows. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** One of LOG_LEVELS. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The mock provider's settings. */
export interface MockConfig {
  /** MOCK_PORT, 9001 unless set. */
  readonly port: number;
  /** HOST to bind, 0.0.0.0 unless set. */
  readonly host: string;
  /** MOCK_TTFT_MS, MOCK_ITL_MS and MOCK_TOKENS, where set. */
  readonly defaults: Readonly<Partial<ScenarioDefaults>>;
  /** LOG_LEVEL, info unless set. */
  readonly logLevel: LogLevel;
}

/** A setting is wrong; the message names the variable and says what it should be. */
export class MockConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MockConfigError";
  }
}

type Env = Readonly<Record<string, string | undefined>>;

function value(env: Env, name: string): string | undefined {
  const text = env[name]?.trim();
  return text === undefined || text === "" ? undefined : text;
}

function integer(env: Env, name: string, max: number): number | undefined {
  const text = value(env, name);
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) > max) throw new MockConfigError(`${name}=${text}: expected an integer from 0 to ${max}`);
  return Number(text);
}

function isLogLevel(text: string): text is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(text);
}

/** Reads and checks the settings; throws MockConfigError on a bad value. */
export function loadMockConfig(env: Env): MockConfig {
  const logLevel = value(env, "LOG_LEVEL") ?? "info";
  if (!isLogLevel(logLevel)) throw new MockConfigError(`LOG_LEVEL=${logLevel}: expected one of ${LOG_LEVELS.join(", ")}`);
  const defaults: { -readonly [K in keyof ScenarioDefaults]?: number } = {};
  const ttftMs = integer(env, "MOCK_TTFT_MS", 3_600_000);
  if (ttftMs !== undefined) defaults.ttftMs = ttftMs;
  const itlMs = integer(env, "MOCK_ITL_MS", 3_600_000);
  if (itlMs !== undefined) defaults.itlMs = itlMs;
  const tokens = integer(env, "MOCK_TOKENS", 1_000_000);
  if (tokens !== undefined) defaults.tokens = tokens;
  return Object.freeze({
    port: integer(env, "MOCK_PORT", 65535) ?? 9001,
    host: value(env, "HOST") ?? "0.0.0.0",
    defaults: Object.freeze(defaults),
    logLevel,
  });
}
