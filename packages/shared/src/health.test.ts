import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ProviderSpec } from "./gen/runnel/v1/control_plane_types.js";
import {
  CircuitBreaker,
  CircuitState,
  DEFAULT_HEALTH_SETTINGS,
  HealthBook,
  healthSettings,
  OutcomeKind,
  type ProviderHealthSettings,
  type RouteOutcome,
} from "./health.js";

/** A whole second, so the one-second buckets of the minute counters line up with the arithmetic below. */
const T0 = 1_700_000_000_000;
const ROUTE = { provider: "p", model: "m" };
const OTHER_MODEL = { provider: "p", model: "m2" };
const OTHER_PROVIDER = { provider: "q", model: "m" };

/** A clock the test moves by hand. */
class FakeClock {
  at = T0;
  readonly now = (): number => this.at;
  advance(ms: number): void {
    this.at += ms;
  }
}

function outcome(kind: OutcomeKind, fields: Partial<RouteOutcome> = {}): RouteOutcome {
  return {
    provider: ROUTE.provider,
    model: ROUTE.model,
    workerId: "",
    kind,
    ttftMs: 0,
    retryAfterMs: 0,
    tokens: 0,
    errorCode: "",
    atMs: 0,
    workerInFlight: 0,
    ...fields,
  };
}

function book(settings: Partial<ProviderHealthSettings> = {}, clock = new FakeClock()): { health: HealthBook; clock: FakeClock } {
  const merged = { ...DEFAULT_HEALTH_SETTINGS, ...settings };
  return { health: new HealthBook(() => merged, clock.now), clock };
}

describe("CircuitBreaker", () => {
  const INTERVAL = 10_000;

  test("starts closed and lets everything through", () => {
    const breaker = new CircuitBreaker();
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_CLOSED);
    assert.deepEqual(breaker.check(T0, INTERVAL), { ok: true, probe: false });
  });

  test("opens after failureThreshold consecutive failures, not before", () => {
    const breaker = new CircuitBreaker();
    breaker.failure(T0, 3);
    breaker.failure(T0, 3);
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_CLOSED);
    assert.deepEqual(breaker.check(T0, INTERVAL), { ok: true, probe: false });
    breaker.failure(T0, 3);
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_OPEN);
  });

  test("a success resets the count of consecutive failures", () => {
    const breaker = new CircuitBreaker();
    breaker.failure(T0, 3);
    breaker.failure(T0, 3);
    breaker.success();
    breaker.failure(T0, 3);
    breaker.failure(T0, 3);
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_CLOSED);
    breaker.failure(T0, 3);
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_OPEN);
  });

  test("open refuses with the time left until the probe interval has passed since it opened", () => {
    const breaker = new CircuitBreaker();
    breaker.failure(T0, 1);
    assert.deepEqual(breaker.check(T0, INTERVAL), { ok: false, reason: "circuit-open", retryAfterMs: 10_000 });
    assert.deepEqual(breaker.check(T0 + 3_000, INTERVAL), { ok: false, reason: "circuit-open", retryAfterMs: 7_000 });
    assert.deepEqual(breaker.check(T0 + 9_999, INTERVAL), { ok: false, reason: "circuit-open", retryAfterMs: 1 });
    assert.deepEqual(breaker.check(T0 + 10_000, INTERVAL), { ok: true, probe: true });
  });

  test("more failures while open do not push the probe back", () => {
    const breaker = new CircuitBreaker();
    breaker.failure(T0, 1);
    breaker.failure(T0 + 5_000, 1);
    assert.deepEqual(breaker.check(T0 + 10_000, INTERVAL), { ok: true, probe: true });
  });

  test("exactly one probe per interval: check does not take it, probeSent does, and others are refused until the next interval", () => {
    const breaker = new CircuitBreaker();
    breaker.failure(T0, 1);
    const due = T0 + INTERVAL;
    assert.deepEqual(breaker.check(due, INTERVAL), { ok: true, probe: true });
    assert.deepEqual(breaker.check(due, INTERVAL), { ok: true, probe: true }, "check alone does not consume the probe");
    breaker.probeSent(due);
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_HALF_OPEN);
    assert.deepEqual(breaker.check(due, INTERVAL), { ok: false, reason: "circuit-open", retryAfterMs: INTERVAL });
    assert.deepEqual(breaker.check(due + INTERVAL - 1, INTERVAL), { ok: false, reason: "circuit-open", retryAfterMs: 1 });
    // The probe never answered: the next interval allows another one.
    assert.deepEqual(breaker.check(due + INTERVAL, INTERVAL), { ok: true, probe: true });
  });

  test("a successful probe closes the circuit and starts counting failures from zero", () => {
    const breaker = new CircuitBreaker();
    breaker.failure(T0, 2);
    breaker.failure(T0, 2);
    breaker.probeSent(T0 + INTERVAL);
    breaker.success();
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_CLOSED);
    assert.deepEqual(breaker.check(T0 + INTERVAL, INTERVAL), { ok: true, probe: false });
    breaker.failure(T0 + INTERVAL, 2);
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_CLOSED);
  });

  test("a failed probe re-opens the circuit for another interval counted from the failure", () => {
    const breaker = new CircuitBreaker();
    breaker.failure(T0, 1);
    breaker.probeSent(T0 + 10_000);
    breaker.failure(T0 + 12_000, 1);
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_OPEN);
    assert.deepEqual(breaker.check(T0 + 12_000, INTERVAL), { ok: false, reason: "circuit-open", retryAfterMs: 10_000 });
    assert.deepEqual(breaker.check(T0 + 21_999, INTERVAL), { ok: false, reason: "circuit-open", retryAfterMs: 1 });
    assert.deepEqual(breaker.check(T0 + 22_000, INTERVAL), { ok: true, probe: true });
  });

  test("probeSent on a closed circuit changes nothing", () => {
    const breaker = new CircuitBreaker();
    breaker.probeSent(T0);
    assert.equal(breaker.state, CircuitState.CIRCUIT_STATE_CLOSED);
    assert.deepEqual(breaker.check(T0, INTERVAL), { ok: true, probe: false });
  });
});

describe("healthSettings", () => {
  test("defaults without a provider, and for circuit fields left at zero", () => {
    assert.deepEqual(healthSettings(undefined), DEFAULT_HEALTH_SETTINGS);
    const spec = { requestsPerMinute: 60, tokensPerMinute: 0, circuit: undefined } as unknown as ProviderSpec;
    assert.deepEqual(healthSettings(spec), { failureThreshold: 5, probeIntervalMs: 10_000, requestsPerMinute: 60, tokensPerMinute: 0 });
  });

  test("takes the provider's circuit and budgets", () => {
    const spec = { requestsPerMinute: 10, tokensPerMinute: 5_000, circuit: { failureThreshold: 2, probeIntervalMs: 3_000 } } as unknown as ProviderSpec;
    assert.deepEqual(healthSettings(spec), { failureThreshold: 2, probeIntervalMs: 3_000, requestsPerMinute: 10, tokensPerMinute: 5_000 });
  });
});

describe("HealthBook", () => {
  test("a route never seen is admitted, closed, with no TTFT and nothing in flight", () => {
    const { health } = book();
    assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
    assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_CLOSED);
    assert.equal(health.ttft(ROUTE), undefined);
    assert.equal(health.inFlight(ROUTE), 0);
    assert.deepEqual(health.status(), []);
  });

  describe("429 cooldown", () => {
    test("refuses the route for retry_after_ms from the outcome's time", () => {
      const { health, clock } = book();
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { retryAfterMs: 5_000, atMs: T0 }));
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "cooldown", retryAfterMs: 5_000 });
      clock.advance(4_000);
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "cooldown", retryAfterMs: 1_000 });
      clock.advance(1_000);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
    });

    test("a 429 without retry_after_ms cools down for 1 s", () => {
      const { health, clock } = book();
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { atMs: T0 }));
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "cooldown", retryAfterMs: 1_000 });
      clock.advance(999);
      assert.equal(health.admission(ROUTE).ok, false);
      clock.advance(1);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
    });

    test("an outcome without atMs is stamped with the book's clock", () => {
      const { health, clock } = book();
      clock.advance(7_000);
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { retryAfterMs: 2_000 }));
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "cooldown", retryAfterMs: 2_000 });
    });

    test("a shorter 429 does not cut a longer cooldown short", () => {
      const { health } = book();
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { retryAfterMs: 5_000, atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { retryAfterMs: 1_000, atMs: T0 }));
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "cooldown", retryAfterMs: 5_000 });
    });

    test("the cooldown is the route's: another model of the provider stays available", () => {
      const { health } = book();
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { retryAfterMs: 5_000, atMs: T0 }));
      assert.deepEqual(health.admission(OTHER_MODEL), { ok: true, probe: false });
    });

    test("a 429 is not a failure for the circuit breaker", () => {
      const { health, clock } = book({ failureThreshold: 1 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { atMs: T0 }));
      clock.advance(1_000);
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_CLOSED);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
    });
  });

  describe("requests-per-minute budget", () => {
    test("counts STARTED outcomes of every worker and every model of the provider together", () => {
      const { health, clock } = book({ requestsPerMinute: 3 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w1", atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w2", atMs: T0 + 10_000, ...OTHER_MODEL }));
      clock.advance(20_000);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w3", atMs: T0 + 20_000 }));
      // The oldest request (at T0) leaves the window at T0 + 60 s.
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "requests-budget", retryAfterMs: 40_000 });
      assert.deepEqual(health.admission(OTHER_MODEL), { ok: false, reason: "requests-budget", retryAfterMs: 40_000 });
      assert.deepEqual(health.admission(OTHER_PROVIDER), { ok: true, probe: false }, "another provider has its own budget");
    });

    test("the window slides: requests older than 60 s stop counting", () => {
      const { health, clock } = book({ requestsPerMinute: 3 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w1", atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w2", atMs: T0 + 500 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w1", atMs: T0 + 30_000 }));
      clock.advance(59_999);
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "requests-budget", retryAfterMs: 1 });
      clock.advance(1);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
      assert.equal(health.status()[0]?.requestsLastMinute, 1);
      clock.advance(30_000);
      assert.equal(health.status()[0]?.requestsLastMinute, 0);
    });

    test("no budget when requestsPerMinute is 0", () => {
      const { health } = book({ requestsPerMinute: 0 });
      for (let index = 0; index < 1_000; index++) health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { atMs: T0 }));
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
    });
  });

  describe("tokens-per-minute budget", () => {
    test("counts tokens of SUCCEEDED and FAILED outcomes from every worker", () => {
      const { health, clock } = book({ tokensPerMinute: 1_000 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w1", atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_SUCCEEDED, { workerId: "w1", tokens: 600, atMs: T0 }));
      clock.advance(5_000);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { workerId: "w2", tokens: 400, atMs: T0 + 5_000, ...OTHER_MODEL }));
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "tokens-budget", retryAfterMs: 55_000 });
      assert.equal(health.status().find((status) => status.model === "m")?.tokensLastMinute, 1_000);
      clock.advance(55_000);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
      assert.equal(health.status().find((status) => status.model === "m")?.tokensLastMinute, 400);
    });

    test("STARTED, FIRST_TOKEN and RELEASED outcomes carry no tokens for the budget", () => {
      const { health } = book({ tokensPerMinute: 1 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, { ttftMs: 5, atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_RELEASED, { atMs: T0 }));
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
    });
  });

  test("the cooldown is reported before a spent budget, and a spent budget before an open circuit", () => {
    const { health } = book({ requestsPerMinute: 1, failureThreshold: 1 });
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { atMs: T0 }));
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0 }));
    assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_OPEN);
    assert.equal((health.admission(ROUTE) as { reason: string }).reason, "requests-budget");
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { retryAfterMs: 3_000, atMs: T0 }));
    assert.equal((health.admission(ROUTE) as { reason: string }).reason, "cooldown");
  });

  test("TTFT is an EWMA with weight 0.2 for the newest sample, the first sample taken as is", () => {
    const { health } = book();
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, { ttftMs: 100, atMs: T0 }));
    assert.equal(health.ttft(ROUTE), 100);
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, { ttftMs: 200, atMs: T0 }));
    assert.equal(health.ttft(ROUTE), 120);
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, { ttftMs: 20, atMs: T0 }));
    assert.equal(health.ttft(ROUTE), 100);
    assert.equal(health.ttft(OTHER_MODEL), undefined);
  });

  test("the error rate is the share of FAILED among the last 20 verdicts (FIRST_TOKEN counts as good)", () => {
    const { health } = book({ failureThreshold: 100 });
    const errorRate = () => health.status()[0]?.errorRate;
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { atMs: T0 }));
    assert.equal(errorRate(), 0, "no verdict yet");
    for (let index = 0; index < 5; index++) health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0 }));
    assert.equal(errorRate(), 1);
    for (let index = 0; index < 15; index++) health.apply(outcome(OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, { ttftMs: 10, atMs: T0 }));
    assert.equal(errorRate(), 0.25);
    // RATE_LIMITED, RELEASED and SUCCEEDED give no verdict.
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { atMs: T0 }));
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_RELEASED, { atMs: T0 }));
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_SUCCEEDED, { atMs: T0 }));
    assert.equal(errorRate(), 0.25);
    for (let index = 0; index < 5; index++) health.apply(outcome(OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, { ttftMs: 10, atMs: T0 }));
    assert.equal(errorRate(), 0, "the five failures left the window");
  });

  describe("in flight", () => {
    test("sums the latest report of each worker", () => {
      const { health } = book();
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w1", workerInFlight: 3, atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w2", workerInFlight: 2, atMs: T0 }));
      assert.equal(health.inFlight(ROUTE), 5);
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_SUCCEEDED, { workerId: "w1", workerInFlight: 1, atMs: T0 }));
      assert.equal(health.inFlight(ROUTE), 3, "w1's new count replaces its old one");
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_RELEASED, { workerId: "w2", workerInFlight: 0, atMs: T0 }));
      assert.equal(health.inFlight(ROUTE), 1);
      assert.equal(health.inFlight(OTHER_MODEL), 0);
    });

    test("an outcome without a worker id leaves the counts alone", () => {
      const { health } = book();
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w1", workerInFlight: 2, atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerInFlight: 9, atMs: T0 }));
      assert.equal(health.inFlight(ROUTE), 2);
    });

    test("a worker's report is forgotten 5 minutes after it was made", () => {
      const { health, clock } = book();
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "gone", workerInFlight: 4, atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "alive", workerInFlight: 1, atMs: T0 + 60_000 }));
      clock.advance(5 * 60_000);
      assert.equal(health.inFlight(ROUTE), 5, "exactly 5 minutes old still counts");
      clock.advance(1);
      assert.equal(health.inFlight(ROUTE), 1);
      assert.equal(health.status()[0]?.inFlight, 1);
      clock.advance(60_000);
      assert.equal(health.inFlight(ROUTE), 0);
    });
  });

  describe("circuit", () => {
    test("opens after failureThreshold FAILED outcomes from any workers and refuses until the probe interval", () => {
      const { health, clock } = book({ failureThreshold: 3, probeIntervalMs: 10_000 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { workerId: "w1", atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { workerId: "w2", atMs: T0 }));
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { workerId: "w3", atMs: T0 }));
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_OPEN);
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "circuit-open", retryAfterMs: 10_000 });
      clock.advance(10_000);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: true });
    });

    test("a SUCCEEDED between failures resets the count", () => {
      const { health } = book({ failureThreshold: 2 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_SUCCEEDED, { atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0 }));
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_CLOSED);
    });

    test("streams cut after their first token still open the circuit (a FIRST_TOKEN does not reset a closed circuit's count)", () => {
      const { health } = book({ failureThreshold: 2 });
      for (let cut = 0; cut < 2; cut++) {
        health.apply(outcome(OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, { ttftMs: 10, atMs: T0 }));
        health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0 }));
      }
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_OPEN);
    });

    test("an outcome a minute or more late does not erase the current second's count", () => {
      const { health } = book({ requestsPerMinute: 5 });
      for (let index = 0; index < 5; index++) health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { atMs: T0 - 60_000 }));
      assert.equal(health.admission(ROUTE).ok, false);
      assert.equal(health.status()[0]?.requestsLastMinute, 5);
    });

    test("a STARTED outcome from another worker while open is that interval's probe", () => {
      const { health, clock } = book({ failureThreshold: 1, probeIntervalMs: 10_000 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { workerId: "w2", atMs: T0 }));
      clock.advance(10_000);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: true });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w2", atMs: T0 + 10_000 }));
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_HALF_OPEN);
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "circuit-open", retryAfterMs: 10_000 });
      clock.advance(2_000);
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, { workerId: "w2", ttftMs: 50, atMs: T0 + 12_000 }));
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_CLOSED);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
    });

    test("a failed probe re-opens the circuit for another interval", () => {
      const { health, clock } = book({ failureThreshold: 1, probeIntervalMs: 10_000 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w2", atMs: T0 + 10_000 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { workerId: "w2", atMs: T0 + 11_000 }));
      clock.advance(11_000);
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_OPEN);
      assert.deepEqual(health.admission(ROUTE), { ok: false, reason: "circuit-open", retryAfterMs: 10_000 });
      clock.advance(10_000);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: true });
    });

    test("a SUCCEEDED probe closes the circuit", () => {
      const { health, clock } = book({ failureThreshold: 1, probeIntervalMs: 10_000 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { atMs: T0 + 10_000 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_SUCCEEDED, { atMs: T0 + 10_500 }));
      clock.advance(10_500);
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_CLOSED);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
    });

    test("STARTED on a closed circuit is not a probe", () => {
      const { health } = book({ failureThreshold: 2 });
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { atMs: T0 }));
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_CLOSED);
      assert.deepEqual(health.admission(ROUTE), { ok: true, probe: false });
    });

    test("each provider's own settings apply", () => {
      const clock = new FakeClock();
      const health = new HealthBook((provider) => ({ ...DEFAULT_HEALTH_SETTINGS, failureThreshold: provider === "p" ? 1 : 3 }), clock.now);
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0 }));
      health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { atMs: T0, ...OTHER_PROVIDER }));
      assert.equal(health.circuit(ROUTE), CircuitState.CIRCUIT_STATE_OPEN);
      assert.equal(health.circuit(OTHER_PROVIDER), CircuitState.CIRCUIT_STATE_CLOSED);
    });
  });

  test("status() lists every route seen with its circuit, error rate, TTFT, in-flight, cooldown and the provider's minute counts", () => {
    const { health, clock } = book({ failureThreshold: 5 });
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w1", workerInFlight: 1, atMs: T0 }));
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, { workerId: "w1", workerInFlight: 1, ttftMs: 150, atMs: T0 }));
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_SUCCEEDED, { workerId: "w1", workerInFlight: 0, tokens: 40, atMs: T0 }));
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_STARTED, { workerId: "w2", workerInFlight: 2, atMs: T0 + 1_000 }));
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_FAILED, { workerId: "w2", workerInFlight: 1, tokens: 2, atMs: T0 + 1_000 }));
    health.apply(outcome(OutcomeKind.OUTCOME_KIND_RATE_LIMITED, { workerId: "w2", workerInFlight: 1, retryAfterMs: 3_000, atMs: T0 + 1_000, ...OTHER_MODEL }));
    clock.advance(2_000);
    assert.deepEqual(health.status(), [
      {
        provider: "p",
        model: "m",
        circuit: CircuitState.CIRCUIT_STATE_CLOSED,
        errorRate: 0.5,
        ttftMs: 150,
        inFlight: 1,
        cooldownUntilMs: 0,
        requestsLastMinute: 2,
        tokensLastMinute: 42,
      },
      {
        provider: "p",
        model: "m2",
        circuit: CircuitState.CIRCUIT_STATE_CLOSED,
        errorRate: 0,
        ttftMs: 0,
        inFlight: 1,
        cooldownUntilMs: T0 + 4_000,
        requestsLastMinute: 2,
        tokensLastMinute: 42,
      },
    ]);
    clock.advance(2_000);
    assert.equal(health.status()[1]?.cooldownUntilMs, 0, "an expired cooldown reads 0");
  });
});
