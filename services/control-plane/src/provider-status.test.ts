import assert from "node:assert/strict";
import { test } from "node:test";
import { CircuitState, controlPlane, HealthBook, OutcomeKind, parseConfig } from "@runnel/shared";
import { healthSettingsFrom, providerStatus } from "./provider-status.js";
import { snapshotFromConfig } from "./snapshot-store.js";
import { liveEntries, type PresenceEntry } from "./worker-presence.js";

const snapshot = snapshotFromConfig(
  parseConfig(
    `
providers:
  - { name: a, type: mock, baseUrl: "http://a/v1", circuit: { failureThreshold: 2 } }
  - { name: b, type: mock, baseUrl: "http://b/v1", limits: { requestsPerMinute: 10 } }
models:
  - { name: one, routes: [{ provider: a, model: x }, { provider: b, model: y }] }
  - { name: two, routes: [{ provider: a, model: x }] }
`,
    {},
  ),
);

const heartbeat = (inFlightByProvider: Record<string, number>) =>
  controlPlane.WorkerHeartbeat.fromPartial({
    capacity: 8,
    inFlight: Object.values(inFlightByProvider).reduce((sum, count) => sum + count, 0),
    inFlightByProvider,
  });

test("health settings come from the snapshot's providers, defaults for an unknown one", () => {
  const settings = healthSettingsFrom(snapshot);
  assert.equal(settings("a").failureThreshold, 2);
  assert.equal(settings("b").requestsPerMinute, 10);
  assert.equal(settings("nobody").failureThreshold, 5);
});

test("every configured route once, in config order, then routes known only from outcomes; open circuits make providers unhealthy", () => {
  const book = new HealthBook(healthSettingsFrom(snapshot), () => 1_000);
  for (let failure = 0; failure < 2; failure++)
    book.apply(controlPlane.RouteOutcome.fromPartial({ provider: "a", model: "x", kind: OutcomeKind.OUTCOME_KIND_FAILED, atMs: 1_000 }));
  book.apply(controlPlane.RouteOutcome.fromPartial({ provider: "b", model: "gone", kind: OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, ttftMs: 50, atMs: 1_000 }));
  const workers: PresenceEntry[] = [
    { workerId: "w1", heartbeat: heartbeat({ a: 2, b: 1 }), lastSeenMs: 900 },
    { workerId: "w2", heartbeat: heartbeat({ a: 1 }), lastSeenMs: 950 },
  ];
  const status = providerStatus(snapshot, book.status(), workers);
  assert.deepEqual(
    status.routes.map((route) => [route.provider, route.model, route.circuit]),
    [
      ["a", "x", CircuitState.CIRCUIT_STATE_OPEN],
      ["b", "y", CircuitState.CIRCUIT_STATE_CLOSED],
      ["b", "gone", CircuitState.CIRCUIT_STATE_CLOSED],
    ],
  );
  assert.deepEqual(
    status.providers.map((provider) => [provider.name, provider.healthy, provider.inFlight]),
    [
      ["a", false, 3],
      ["b", true, 1],
    ],
  );
  assert.deepEqual(
    status.workers.map((worker) => [worker.workerId, worker.inFlight, worker.lastSeenMs]),
    [
      ["w1", 3, 900],
      ["w2", 1, 950],
    ],
  );
  assert.equal(status.routingVersion, snapshot.version);
});

test("a worker is live until the expiry window passes without a heartbeat", () => {
  const entries: PresenceEntry[] = [
    { workerId: "fresh", heartbeat: heartbeat({}), lastSeenMs: 9_000 },
    { workerId: "edge", heartbeat: heartbeat({}), lastSeenMs: 0 },
    { workerId: "gone", heartbeat: heartbeat({}), lastSeenMs: -1 },
  ];
  assert.deepEqual(
    liveEntries(entries, 10_000, 10_000).map((entry) => entry.workerId),
    ["fresh", "edge"],
  );
});
