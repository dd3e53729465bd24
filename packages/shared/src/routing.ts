/**
 * Routing state, free of I/O: the control plane builds snapshots from the
 * config; the ingress and workers decide per request from their last one.
 */
import { createHash } from "node:crypto";
import type { RunnelConfig } from "./config.js";
import { type ClientAuth, type ModelSpec, type ProviderSpec, type RouteSpec, RoutingSnapshot } from "./gen/runnel/v1/control_plane_types.js";
import type { ChatRequest, Route } from "./gen/runnel/v1/stream.js";

export type { ClientAuth, ModelSpec, ProviderSpec, RouteSpec };
export { RoutingSnapshot };

/** Builds a versioned snapshot from a validated config. */
export function buildSnapshot(config: Readonly<RunnelConfig>, version: number, now = Date.now()): RoutingSnapshot {
  return {
    version,
    createdAtMs: now,
    providers: config.providers.map((provider) => ({
      name: provider.name,
      type: provider.type,
      baseUrl: provider.baseUrl,
      apiKey: provider.apiKey ?? "",
      headers: { ...provider.headers },
      timeouts: {
        connectMs: provider.timeouts.connect,
        firstTokenMs: provider.timeouts.firstToken,
        idleMs: provider.timeouts.idle,
        totalMs: provider.timeouts.total,
      },
      maxConnections: provider.maxConnections,
      healthy: true,
      failOnMalformedChunk: provider.malformedChunks === "fail",
      continueFinalMessage: provider.quirks.continueFinalMessage,
      retries: {
        maxAttempts: provider.retries.maxAttempts,
        budgetMs: provider.retries.budget,
        baseDelayMs: provider.retries.baseDelay,
        maxDelayMs: provider.retries.maxDelay,
      },
      requestsPerMinute: provider.limits.requestsPerMinute ?? 0,
      tokensPerMinute: provider.limits.tokensPerMinute ?? 0,
      circuit: { failureThreshold: provider.circuit.failureThreshold, probeIntervalMs: provider.circuit.probeInterval },
      propagateTrace: provider.propagateTrace,
    })),
    models: config.models.map((model) => {
      const priorities = effectivePriorities(model.routes);
      return {
        name: model.name,
        routes: model.routes.map((route, index) => ({
          provider: route.provider,
          model: route.model,
          weight: route.weight,
          priority: priorities[index] ?? 0,
          timeouts: {
            connectMs: 0,
            firstTokenMs: route.timeouts?.firstToken ?? 0,
            idleMs: route.timeouts?.idle ?? 0,
            totalMs: route.timeouts?.total ?? 0,
          },
          acceptsPrefill: route.acceptsPrefill,
          contextWindow: route.contextWindow ?? 0,
        })),
        strategy: model.strategy,
        afterFirstToken: model.afterFirstToken,
        hedgeAfterMs: model.hedgeAfter ?? 0,
        failoverOnContentPolicy: model.failover.onContentPolicy,
        maxRoutes: model.failover.maxRoutes,
        failoverBudgetMs: model.failover.budget,
        sameRouteRetries: model.failover.sameRouteRetries,
      };
    }),
    clientAuth: clientAuthFrom(config.auth),
  };
}

/** The SHA-256 digest of an API key, as the snapshot carries it and the ingress compares it. */
export function apiKeyDigest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}

function clientAuthFrom(auth: RunnelConfig["auth"]): ClientAuth {
  return {
    enabled: auth !== undefined,
    keys: (auth?.apiKeys ?? []).map((entry) => ({ name: entry.name, sha256: apiKeyDigest(entry.key), admin: entry.admin })),
  };
}

/**
 * The priority each route of a model is tried at, in list order. A route
 * with a `priority` keeps it; one without comes after every route listed
 * above it (one more than the highest priority above it, 0 for the first).
 * So a list without priorities is a failover order (0, 1, 2, …), and routes
 * share the load only where their priorities are equal: in practice, where
 * they are given the same `priority`. Pure.
 */
export function effectivePriorities(routes: ReadonlyArray<{ readonly priority?: number | undefined }>): number[] {
  let highest = -1;
  return routes.map((route) => {
    const priority = route.priority ?? highest + 1;
    highest = Math.max(highest, priority);
    return priority;
  });
}

/** The ingress's view: provider credentials and headers removed (client key digests kept). */
export function redactForIngress(snapshot: RoutingSnapshot): RoutingSnapshot {
  return {
    ...snapshot,
    providers: snapshot.providers.map((provider) => ({ ...provider, apiKey: "", headers: {} })),
  };
}

/** The worker's view: no client API keys (not even their digests); it calls providers and never authenticates clients. */
export function redactForWorker(snapshot: RoutingSnapshot): RoutingSnapshot {
  return { ...snapshot, clientAuth: undefined };
}

/** Indexes a snapshot for per-request lookups. */
export class RoutingTable {
  readonly version: number;
  readonly #models: Map<string, ModelSpec>;
  readonly #providers: Map<string, ProviderSpec>;

  constructor(readonly snapshot: RoutingSnapshot) {
    this.version = snapshot.version;
    this.#models = new Map(snapshot.models.map((model) => [model.name, model]));
    this.#providers = new Map(snapshot.providers.map((provider) => [provider.name, provider]));
  }

  model(name: string): ModelSpec | undefined {
    return this.#models.get(name);
  }

  provider(name: string): ProviderSpec | undefined {
    return this.#providers.get(name);
  }

  /**
   * The provider as one route of a model uses it: the route's own timeouts
   * (per model) over the provider's. Undefined when the provider is unknown.
   */
  providerForRoute(modelName: string, route: Route): ProviderSpec | undefined {
    const provider = this.#providers.get(route.provider);
    if (!provider) return undefined;
    const spec = this.#models.get(modelName)?.routes.find((candidate) => candidate.provider === route.provider && candidate.model === route.model);
    const own = spec?.timeouts;
    if (!own || (!own.firstTokenMs && !own.idleMs && !own.totalMs)) return provider;
    const base = provider.timeouts ?? { connectMs: 0, firstTokenMs: 0, idleMs: 0, totalMs: 0 };
    return {
      ...provider,
      timeouts: {
        // A provider's connections are pooled: connecting is the provider's business, not the model's.
        connectMs: base.connectMs,
        firstTokenMs: own.firstTokenMs || base.firstTokenMs,
        idleMs: own.idleMs || base.idleMs,
        totalMs: own.totalMs || base.totalMs,
      },
    };
  }

  /**
   * The routes one request tries, in order: priority groups ascending, each
   * ordered by the model's strategy with live health. Availability (circuit,
   * cooldown, budgets) is checked when a route is about to be used, not here.
   */
  planRoutes(modelName: string, health: HealthView | undefined, affinityKey: string, random: () => number = Math.random): RouteSpec[] {
    const model = this.#models.get(modelName);
    if (!model) return [];
    const priorities = [...new Set(model.routes.map((route) => route.priority))].sort((a, b) => a - b);
    return priorities.flatMap((priority) =>
      orderGroup(
        model.routes.filter((route) => route.priority === priority),
        model.strategy,
        health,
        affinityKey,
        random,
      ),
    );
  }

  get modelNames(): string[] {
    return [...this.#models.keys()];
  }
}

/** What the strategies read about routes' health (a HealthBook provides it). */
export interface HealthView {
  inFlight(route: Route): number;
  ttft(route: Route): number | undefined;
}

export type Strategy = "weighted" | "least-inflight" | "latency" | "affinity";

/**
 * Orders one priority group of routes by the model's strategy. Pure given
 * `random`:
 * - weighted: a weighted random order;
 * - least-inflight: fewest in-flight requests first (ties: weighted random);
 * - latency: power of two choices on the EWMA time to first token (a route
 *   without a sample counts as fastest, so new routes get measured), the
 *   rest by that time;
 * - affinity: rendezvous hashing of the affinity key, weighted, so a
 *   conversation keeps its route and a removed route only moves its own keys.
 */
export function orderGroup<T extends { provider: string; model: string; weight: number }>(
  group: readonly T[],
  strategy: string,
  health: HealthView | undefined,
  affinityKey: string,
  random: () => number = Math.random,
): T[] {
  if (group.length < 2) return [...group];
  switch (strategy) {
    case "least-inflight": {
      if (!health) return weightedShuffle(group, random);
      const shuffled = weightedShuffle(group, random);
      const load = new Map(shuffled.map((route) => [route, health.inFlight(route)]));
      // Array.prototype.sort is stable: equal loads keep the weighted random order.
      return shuffled.sort((a, b) => (load.get(a) ?? 0) - (load.get(b) ?? 0));
    }
    case "latency": {
      if (!health) return weightedShuffle(group, random);
      const ttft = (route: T) => health.ttft(route) ?? 0;
      const [first, second, ...rest] = weightedShuffle(group, random) as [T, T, ...T[]];
      const [winner, loser] = ttft(second) < ttft(first) ? [second, first] : [first, second];
      return [winner, ...[loser, ...rest].sort((a, b) => ttft(a) - ttft(b))];
    }
    case "affinity": {
      if (!affinityKey) return weightedShuffle(group, random);
      return group
        .map((route) => {
          // Weighted rendezvous hashing: score = -w / ln(u), u uniform in (0, 1) from the hash.
          const unit = (fnv1a(`${affinityKey}\u0000${route.provider}\u0000${route.model}`) + 0.5) / 4_294_967_296;
          return { route, score: -Math.max(route.weight, 1) / Math.log(unit) };
        })
        .sort((a, b) => b.score - a.score)
        .map((entry) => entry.route);
    }
    default:
      return weightedShuffle(group, random);
  }
}

/** Efraimidis–Spirakis weighted sampling without replacement: key = u^(1/w), descending. */
function weightedShuffle<T extends { weight: number }>(items: readonly T[], random: () => number): T[] {
  if (items.length < 2) return [...items];
  return items
    .map((item) => ({ item, key: random() ** (1 / Math.max(item.weight, 1)) }))
    .sort((a, b) => b.key - a.key)
    .map((entry) => entry.item);
}

/** Characters of the prompt's beginning that identify a conversation under the `affinity` strategy. */
const AFFINITY_PREFIX_CHARS = 1024;

/**
 * The key that keeps one conversation on one route under the `affinity`
 * strategy: the client's session id when it sent one, else the request's
 * `user`, else a hash of the prompt's beginning (the system prompt and first
 * user turn, which every later turn of the conversation repeats). Pure.
 */
export function affinityKeyFor(request: ChatRequest, session?: string): string {
  if (session) return `session:${session}`;
  if (request.user) return `user:${request.user}`;
  let text = "";
  for (const message of request.messages) {
    for (const part of message.content) {
      if (part.part?.$case === "text") text += part.part.value;
      if (text.length >= AFFINITY_PREFIX_CHARS) break;
    }
    text += "\u0000";
    if (text.length >= AFFINITY_PREFIX_CHARS || message.role === "user") break;
  }
  return `prefix:${fnv1a(text.slice(0, AFFINITY_PREFIX_CHARS)).toString(16)}`;
}

/** 32-bit FNV-1a: a fast, well-spread hash for keys (not for security). */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
