/**
 * This worker's part of the shared health feed (`runnel.health.outcomes`):
 * every route outcome of this worker is applied to its HealthBook and
 * published, with the worker's in-flight count on the route; every other
 * worker's outcome is folded in as it arrives. docs/routing.md has what the
 * book keeps.
 */
import { controlPlane, HEALTH_OUTCOMES_SUBJECT } from "@runnel/shared/contracts";
import { type HealthBook, OutcomeKind, routeKey } from "@runnel/shared/domain";
import type { Bus, Logger } from "@runnel/shared/runtime";
import type { OutcomeReport } from "./route-runner.js";

export class HealthFeed {
  readonly #inFlightByRoute = new Map<string, number>();
  readonly #subscription: ReturnType<Bus["nc"]["subscribe"]>;
  #undecodable = 0;

  constructor(
    private readonly bus: Bus,
    private readonly workerId: string,
    readonly health: HealthBook,
    log: Logger,
  ) {
    // Every worker's outcomes (this one's are applied when they happen).
    this.#subscription = bus.nc.subscribe(HEALTH_OUTCOMES_SUBJECT, {
      callback: (error, message) => {
        if (error) return;
        try {
          const outcome = controlPlane.RouteOutcome.decode(message.data);
          if (outcome.workerId !== workerId) health.apply(outcome);
        } catch (decodeError) {
          this.#undecodable += 1;
          if (this.#undecodable === 1 || this.#undecodable % 1000 === 0) {
            log.warn({ err: decodeError, undecodable: this.#undecodable }, "undecodable route outcome; ignored");
          }
        }
      },
    });
  }

  /** Applies one of this worker's outcomes and publishes it. */
  report(outcome: OutcomeReport): void {
    const key = routeKey(outcome.route);
    let count = this.#inFlightByRoute.get(key) ?? 0;
    // STARTED opens a request on the route; every outcome but FIRST_TOKEN ends one.
    if (outcome.kind === OutcomeKind.OUTCOME_KIND_STARTED) count += 1;
    else if (outcome.kind !== OutcomeKind.OUTCOME_KIND_FIRST_TOKEN) count = Math.max(0, count - 1);
    if (count === 0) this.#inFlightByRoute.delete(key);
    else this.#inFlightByRoute.set(key, count);
    const message: controlPlane.RouteOutcome = {
      provider: outcome.route.provider,
      model: outcome.route.model,
      workerId: this.workerId,
      kind: outcome.kind,
      ttftMs: outcome.ttftMs ?? 0,
      retryAfterMs: outcome.retryAfterMs ?? 0,
      tokens: outcome.tokens ?? 0,
      errorCode: outcome.errorCode ?? "",
      atMs: Date.now(),
      workerInFlight: count,
    };
    this.health.apply(message);
    if (!this.bus.nc.isClosed()) this.bus.nc.publish(HEALTH_OUTCOMES_SUBJECT, controlPlane.RouteOutcome.encode(message).finish());
  }

  close(): void {
    this.#subscription.unsubscribe();
  }
}
