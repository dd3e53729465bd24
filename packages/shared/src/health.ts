/**
 * Route health, free of I/O: folded from the outcome feed that every worker
 * publishes (`runnel.health.outcomes`). Every worker and every control-plane
 * replica folds the same feed, so they agree without any of them owning the
 * state, and a replica that restarts recomputes it from what follows.
 *
 * Per route (provider + upstream model): an EWMA of time to first token, the
 * error rate of recent verdicts, in-flight requests per worker, a circuit
 * breaker, and a 429 cooldown. Per provider: requests and tokens in the last
 * minute, for the budgets.
 */
import { CircuitState, OutcomeKind, type ProviderSpec, type RouteOutcome, type RouteStatus } from "./gen/runnel/v1/control_plane_types.js";
import type { Route } from "./gen/runnel/v1/stream.js";

export { CircuitState, OutcomeKind, type RouteOutcome, type RouteStatus };

/** Settings of one provider that health needs (from the routing snapshot). */
export interface ProviderHealthSettings {
  readonly failureThreshold: number;
  readonly probeIntervalMs: number;
  /** 0: no budget. */
  readonly requestsPerMinute: number;
  readonly tokensPerMinute: number;
}

/** A provider's health settings from its snapshot spec (defaults when unknown). */
export function healthSettings(provider: ProviderSpec | undefined): ProviderHealthSettings {
  if (!provider) return DEFAULT_HEALTH_SETTINGS;
  return {
    failureThreshold: provider.circuit?.failureThreshold || DEFAULT_HEALTH_SETTINGS.failureThreshold,
    probeIntervalMs: provider.circuit?.probeIntervalMs || DEFAULT_HEALTH_SETTINGS.probeIntervalMs,
    requestsPerMinute: provider.requestsPerMinute,
    tokensPerMinute: provider.tokensPerMinute,
  };
}

export const DEFAULT_HEALTH_SETTINGS: ProviderHealthSettings = Object.freeze({
  failureThreshold: 5,
  probeIntervalMs: 10_000,
  requestsPerMinute: 0,
  tokensPerMinute: 0,
});

/** Why a route cannot take a request now. */
export type Unavailable =
  | { readonly reason: "circuit-open"; readonly retryAfterMs: number }
  | { readonly reason: "cooldown"; readonly retryAfterMs: number }
  | { readonly reason: "requests-budget"; readonly retryAfterMs: number }
  | { readonly reason: "tokens-budget"; readonly retryAfterMs: number };

/** Whether a route may take a request now; a probe is the one request an open circuit lets through. */
export type Admission = { readonly ok: true; readonly probe: boolean } | ({ readonly ok: false } & Unavailable);

/** Weight of the newest sample in the TTFT average. */
const EWMA_ALPHA = 0.2;
/** Verdicts the error rate is computed over. */
const VERDICT_WINDOW = 20;
/** A 429 without Retry-After cools the route down this long. */
const DEFAULT_COOLDOWN_MS = 1_000;
/** Another worker's in-flight report is forgotten after this long without news. */
const IN_FLIGHT_EXPIRY_MS = 5 * 60_000;
const MINUTE_MS = 60_000;
const BUCKET_MS = 1_000;
const BUCKETS = MINUTE_MS / BUCKET_MS;

/** Sums over the last minute in one-second buckets: O(1) per add, bounded memory. */
class MinuteCounter {
  readonly #counts = new Float64Array(BUCKETS);
  readonly #stamps = new Float64Array(BUCKETS).fill(-1);

  /** Adds `amount` at time `at`; one a window or more away from `now` (a late or skewed report) is ignored: it would land in a slot of the current window. */
  add(at: number, amount: number, now: number): void {
    if (at <= now - MINUTE_MS || at >= now + MINUTE_MS) return;
    const second = Math.floor(at / BUCKET_MS);
    const slot = second % BUCKETS;
    if (this.#stamps[slot] !== second) {
      this.#stamps[slot] = second;
      this.#counts[slot] = 0;
    }
    this.#counts[slot] = (this.#counts[slot] ?? 0) + amount;
  }

  total(now: number): number {
    const second = Math.floor(now / BUCKET_MS);
    let sum = 0;
    for (let slot = 0; slot < BUCKETS; slot++) {
      const stamp = this.#stamps[slot] ?? -1;
      if (stamp > second - BUCKETS && stamp <= second) sum += this.#counts[slot] ?? 0;
    }
    return sum;
  }

  /** Milliseconds until the oldest counted amount leaves the window (when the window is full). */
  msUntilOldestExpires(now: number): number {
    const second = Math.floor(now / BUCKET_MS);
    let oldest = second;
    for (let slot = 0; slot < BUCKETS; slot++) {
      const stamp = this.#stamps[slot] ?? -1;
      if (stamp > second - BUCKETS && stamp < oldest && (this.#counts[slot] ?? 0) > 0) oldest = stamp;
    }
    return Math.max(1, (oldest + BUCKETS) * BUCKET_MS - now);
  }
}

/**
 * A circuit breaker. Closed: everything passes; `failureThreshold`
 * consecutive failures open it. Open: nothing passes except one probe per
 * `probeIntervalMs`; the probe's success closes it, its failure keeps it open
 * for another interval. Half-open is the state while a probe is out.
 */
export class CircuitBreaker {
  #state: CircuitState = CircuitState.CIRCUIT_STATE_CLOSED;
  #consecutiveFailures = 0;
  /** When the last probe was let through (or the circuit opened). */
  #probeAt = 0;

  get state(): CircuitState {
    return this.#state;
  }

  /** Whether a request may go now; `probe` when it is the one an open circuit lets through. Does not take the probe. */
  check(now: number, probeIntervalMs: number): Admission {
    if (this.#state === CircuitState.CIRCUIT_STATE_CLOSED) return { ok: true, probe: false };
    const wait = this.#probeAt + probeIntervalMs - now;
    if (wait <= 0) return { ok: true, probe: true };
    return { ok: false, reason: "circuit-open", retryAfterMs: wait };
  }

  /** A probe was sent (by any worker): no other for an interval. */
  probeSent(now: number): void {
    if (this.#state === CircuitState.CIRCUIT_STATE_CLOSED) return;
    this.#state = CircuitState.CIRCUIT_STATE_HALF_OPEN;
    this.#probeAt = now;
  }

  /** A request completed: closes the circuit and resets the failure count. */
  success(): void {
    this.#state = CircuitState.CIRCUIT_STATE_CLOSED;
    this.#consecutiveFailures = 0;
  }

  /**
   * A first token: a probe that answers closes the circuit; on a closed one it
   * does not reset the failure count, so a provider that keeps cutting its
   * streams after the first token still opens it.
   */
  firstToken(): void {
    if (this.#state !== CircuitState.CIRCUIT_STATE_CLOSED) this.success();
  }

  failure(now: number, failureThreshold: number): void {
    this.#consecutiveFailures += 1;
    if (this.#state === CircuitState.CIRCUIT_STATE_HALF_OPEN) {
      // The probe failed: open for another interval from now.
      this.#state = CircuitState.CIRCUIT_STATE_OPEN;
      this.#probeAt = now;
      return;
    }
    if (this.#state === CircuitState.CIRCUIT_STATE_CLOSED && this.#consecutiveFailures >= failureThreshold) {
      this.#state = CircuitState.CIRCUIT_STATE_OPEN;
      this.#probeAt = now;
    }
  }
}

class RouteHealth {
  readonly breaker = new CircuitBreaker();
  ttftMs: number | undefined;
  cooldownUntil = 0;
  readonly #verdicts: boolean[] = [];
  readonly inFlight = new Map<string, { count: number; at: number }>();

  constructor(
    readonly provider: string,
    readonly model: string,
  ) {}

  verdict(ok: boolean): void {
    this.#verdicts.push(ok);
    if (this.#verdicts.length > VERDICT_WINDOW) this.#verdicts.shift();
  }

  get errorRate(): number {
    if (this.#verdicts.length === 0) return 0;
    return this.#verdicts.filter((ok) => !ok).length / this.#verdicts.length;
  }

  totalInFlight(now: number): number {
    let total = 0;
    for (const [worker, entry] of this.inFlight) {
      if (now - entry.at > IN_FLIGHT_EXPIRY_MS) this.inFlight.delete(worker);
      else total += entry.count;
    }
    return total;
  }
}

class ProviderUsage {
  readonly requests = new MinuteCounter();
  readonly tokens = new MinuteCounter();
}

export function routeKey(route: Route): string {
  return `${route.provider}\u0000${route.model}`;
}

/**
 * The health view of every route, folded from outcomes. `settings` gives a
 * provider's breaker and budget settings as the current snapshot says.
 */
export class HealthBook {
  readonly #routes = new Map<string, RouteHealth>();
  readonly #providers = new Map<string, ProviderUsage>();

  constructor(
    readonly settings: (provider: string) => ProviderHealthSettings,
    private readonly now: () => number = Date.now,
  ) {}

  #route(route: Route): RouteHealth {
    const key = routeKey(route);
    let health = this.#routes.get(key);
    if (!health) {
      health = new RouteHealth(route.provider, route.model);
      this.#routes.set(key, health);
    }
    return health;
  }

  #usage(provider: string): ProviderUsage {
    let usage = this.#providers.get(provider);
    if (!usage) {
      usage = new ProviderUsage();
      this.#providers.set(provider, usage);
    }
    return usage;
  }

  /** Folds one outcome (from this worker or from the feed). */
  apply(outcome: RouteOutcome): void {
    const now = outcome.atMs || this.now();
    const route = this.#route({ provider: outcome.provider, model: outcome.model });
    const settings = this.settings(outcome.provider);
    if (outcome.workerId) route.inFlight.set(outcome.workerId, { count: outcome.workerInFlight, at: now });
    switch (outcome.kind) {
      case OutcomeKind.OUTCOME_KIND_STARTED:
        this.#usage(outcome.provider).requests.add(now, 1, this.now());
        if (route.breaker.state !== CircuitState.CIRCUIT_STATE_CLOSED) route.breaker.probeSent(now);
        break;
      case OutcomeKind.OUTCOME_KIND_FIRST_TOKEN:
        route.ttftMs = route.ttftMs === undefined ? outcome.ttftMs : route.ttftMs + EWMA_ALPHA * (outcome.ttftMs - route.ttftMs);
        route.breaker.firstToken();
        route.verdict(true);
        break;
      case OutcomeKind.OUTCOME_KIND_SUCCEEDED:
        if (outcome.tokens > 0) this.#usage(outcome.provider).tokens.add(now, outcome.tokens, this.now());
        route.breaker.success();
        break;
      case OutcomeKind.OUTCOME_KIND_FAILED:
        if (outcome.tokens > 0) this.#usage(outcome.provider).tokens.add(now, outcome.tokens, this.now());
        route.breaker.failure(now, settings.failureThreshold);
        route.verdict(false);
        break;
      case OutcomeKind.OUTCOME_KIND_RATE_LIMITED:
        route.cooldownUntil = Math.max(route.cooldownUntil, now + (outcome.retryAfterMs || DEFAULT_COOLDOWN_MS));
        break;
      default:
        break;
    }
  }

  /** Whether `route` may take a request now (circuit, cooldown, provider budgets). */
  admission(route: Route): Admission {
    const now = this.now();
    const health = this.#routes.get(routeKey(route));
    const settings = this.settings(route.provider);
    if (health && health.cooldownUntil > now) return { ok: false, reason: "cooldown", retryAfterMs: health.cooldownUntil - now };
    const usage = this.#providers.get(route.provider);
    if (usage && settings.requestsPerMinute > 0 && usage.requests.total(now) >= settings.requestsPerMinute) {
      return { ok: false, reason: "requests-budget", retryAfterMs: usage.requests.msUntilOldestExpires(now) };
    }
    if (usage && settings.tokensPerMinute > 0 && usage.tokens.total(now) >= settings.tokensPerMinute) {
      return { ok: false, reason: "tokens-budget", retryAfterMs: usage.tokens.msUntilOldestExpires(now) };
    }
    return health ? health.breaker.check(now, settings.probeIntervalMs) : { ok: true, probe: false };
  }

  /** EWMA time to first token, undefined before any sample. */
  ttft(route: Route): number | undefined {
    return this.#routes.get(routeKey(route))?.ttftMs;
  }

  /** In-flight requests on a route across the workers that reported. */
  inFlight(route: Route): number {
    return this.#routes.get(routeKey(route))?.totalInFlight(this.now()) ?? 0;
  }

  circuit(route: Route): CircuitState {
    return this.#routes.get(routeKey(route))?.breaker.state ?? CircuitState.CIRCUIT_STATE_CLOSED;
  }

  /** Every route seen so far, for admin and metrics. */
  status(): RouteStatus[] {
    const now = this.now();
    return [...this.#routes.values()].map((health) => {
      const usage = this.#providers.get(health.provider);
      return {
        provider: health.provider,
        model: health.model,
        circuit: health.breaker.state,
        errorRate: health.errorRate,
        ttftMs: health.ttftMs ?? 0,
        inFlight: health.totalInFlight(now),
        cooldownUntilMs: health.cooldownUntil > now ? health.cooldownUntil : 0,
        requestsLastMinute: usage?.requests.total(now) ?? 0,
        tokensLastMinute: usage?.tokens.total(now) ?? 0,
      };
    });
  }
}
