/**
 * What GetProviderStatus answers, free of I/O: the routes' health as folded
 * from the outcome feed, the providers' health from their routes' circuits,
 * and the live workers from the shared presence. Every replica folds the
 * same feed and reads the same presence, so every replica answers the same.
 */
import type { controlPlane } from "@runnel/shared/contracts";
import { CircuitState, healthSettings, type ProviderHealthSettings, type RouteStatus, routeKey } from "@runnel/shared/domain";
import { inFlightByProvider, type PresenceEntry, workerStatus } from "./worker-presence.js";

/** A provider's breaker and budget settings as a snapshot gives them (defaults for an unknown provider). */
export function healthSettingsFrom(snapshot: controlPlane.RoutingSnapshot): (provider: string) => ProviderHealthSettings {
  const byName = new Map(snapshot.providers.map((provider) => [provider.name, healthSettings(provider)]));
  return (provider) => byName.get(provider) ?? healthSettings(undefined);
}

function closedRoute(provider: string, model: string): RouteStatus {
  return {
    provider,
    model,
    circuit: CircuitState.CIRCUIT_STATE_CLOSED,
    errorRate: 0,
    ttftMs: 0,
    inFlight: 0,
    cooldownUntilMs: 0,
    requestsLastMinute: 0,
    tokensLastMinute: 0,
  };
}

/** A circuit that is not closed makes its provider unhealthy. */
function isOpen(circuit: CircuitState): boolean {
  return circuit === CircuitState.CIRCUIT_STATE_OPEN || circuit === CircuitState.CIRCUIT_STATE_HALF_OPEN;
}

/**
 * The status: every route of the snapshot in config order (closed and idle
 * until an outcome about it arrives), then routes known only from outcomes
 * (removed by a reload, say); a provider is healthy while none of its
 * routes' circuits is open or half-open; in-flight per provider is summed
 * from the live workers' heartbeats.
 */
export function providerStatus(
  snapshot: controlPlane.RoutingSnapshot,
  routes: readonly RouteStatus[],
  workers: readonly PresenceEntry[],
): controlPlane.GetProviderStatusResponse {
  const seen = new Map(routes.map((route) => [routeKey(route), route]));
  const listed: RouteStatus[] = [];
  const keys = new Set<string>();
  for (const model of snapshot.models) {
    for (const route of model.routes) {
      const key = routeKey(route);
      if (keys.has(key)) continue;
      keys.add(key);
      listed.push(seen.get(key) ?? closedRoute(route.provider, route.model));
    }
  }
  for (const route of routes) if (!keys.has(routeKey(route))) listed.push(route);
  const unhealthy = new Set(listed.filter((route) => isOpen(route.circuit)).map((route) => route.provider));
  const inFlight = inFlightByProvider(workers);
  return {
    routingVersion: snapshot.version,
    providers: snapshot.providers.map((provider) => ({
      name: provider.name,
      type: provider.type,
      healthy: !unhealthy.has(provider.name),
      inFlight: inFlight.get(provider.name) ?? 0,
    })),
    routes: listed,
    workers: workers.map(workerStatus),
  };
}
