import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { parseConfig } from "./config.js";
import type { ChatRequest } from "./gen/runnel/v1/stream.js";
import { DEFAULT_HEALTH_SETTINGS, HealthBook, OutcomeKind } from "./health.js";
import {
  affinityKeyFor,
  buildSnapshot,
  effectivePriorities,
  type HealthView,
  orderGroup,
  RoutingSnapshot,
  RoutingTable,
  redactForIngress,
  redactForWorker,
} from "./routing.js";

const CONFIG = `
providers:
  - name: openai
    type: openai
    baseUrl: https://api.openai.com/v1
    apiKey: sk-secret
    headers: { OpenAI-Organization: org-1 }
    timeouts: { connect: 2s, firstToken: 30s, idle: 10s, total: 10m }
    maxConnections: 64
  - name: vllm
    type: openai
    baseUrl: http://vllm:8000/v1
  - name: mock
    type: mock
    baseUrl: http://127.0.0.1:9001/v1
models:
  - name: gpt
    routes:
      - { provider: openai, model: gpt-4o-mini, weight: 3, priority: 0 }
      - { provider: vllm, model: llama, weight: 1, priority: 0 }
      - { provider: mock, model: mock, priority: 1 }
  - name: solo
    routes:
      - { provider: mock, model: mock }
`;

/** mulberry32: a small deterministic PRNG, so statistical tests are reproducible. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The providers of a plan, in order. */
const names = (routes: readonly { provider: string }[]) => routes.map((route) => route.provider);

/** A health view from fixed numbers per provider. */
function fakeHealth(inFlight: Record<string, number>, ttft: Record<string, number | undefined> = {}): HealthView {
  return { inFlight: (route) => inFlight[route.provider] ?? 0, ttft: (route) => ttft[route.provider] };
}

function snapshot(): RoutingSnapshot {
  return buildSnapshot(parseConfig(CONFIG, {}), 5, 1_700_000_000_000);
}

/** A snapshot with one model whose routes are given directly. */
function snapshotWith(routes: Array<{ provider: string; weight?: number; priority?: number }>): RoutingSnapshot {
  const names = [...new Set(routes.map((r) => r.provider))];
  return {
    version: 1,
    createdAtMs: 0,
    providers: names.map((name) => ({
      name,
      type: "openai",
      baseUrl: `http://${name}/v1`,
      apiKey: "",
      headers: {},
      timeouts: { connectMs: 1, firstTokenMs: 1, idleMs: 1, totalMs: 0 },
      maxConnections: 1,
      healthy: true,
      retries: undefined,
      failOnMalformedChunk: false,
      continueFinalMessage: false,
      requestsPerMinute: 0,
      tokensPerMinute: 0,
      circuit: undefined,
      propagateTrace: true,
    })),
    models: [
      {
        name: "m",
        routes: routes.map((r) => ({
          provider: r.provider,
          model: `${r.provider}-up`,
          weight: r.weight ?? 1,
          priority: r.priority ?? 0,
          timeouts: undefined,
          acceptsPrefill: false,
          contextWindow: 0,
        })),
        strategy: "weighted",
        afterFirstToken: "error",
        hedgeAfterMs: 0,
        failoverOnContentPolicy: false,
        maxRoutes: 3,
        failoverBudgetMs: 30_000,
        sameRouteRetries: "last-resort",
      },
    ],
  };
}

describe("buildSnapshot", () => {
  test("carries version, time, providers with timeouts in ms and credentials, and models with routes", () => {
    const built = snapshot();
    assert.equal(built.version, 5);
    assert.equal(built.createdAtMs, 1_700_000_000_000);
    assert.deepEqual(built.providers[0], {
      name: "openai",
      type: "openai",
      baseUrl: "https://api.openai.com/v1",
      apiKey: "sk-secret",
      headers: { "OpenAI-Organization": "org-1" },
      timeouts: { connectMs: 2_000, firstTokenMs: 30_000, idleMs: 10_000, totalMs: 600_000 },
      maxConnections: 64,
      healthy: true,
      retries: { maxAttempts: 3, budgetMs: 20_000, baseDelayMs: 200, maxDelayMs: 4_000 },
      failOnMalformedChunk: false,
      continueFinalMessage: false,
      requestsPerMinute: 0,
      tokensPerMinute: 0,
      circuit: { failureThreshold: 5, probeIntervalMs: 10_000 },
      propagateTrace: true,
    });
    const inherit = { connectMs: 0, firstTokenMs: 0, idleMs: 0, totalMs: 0 };
    const route = { acceptsPrefill: false, contextWindow: 0, timeouts: inherit };
    const defaults = {
      strategy: "weighted",
      afterFirstToken: "error",
      hedgeAfterMs: 0,
      failoverOnContentPolicy: false,
      maxRoutes: 3,
      failoverBudgetMs: 30_000,
      sameRouteRetries: "last-resort",
    };
    assert.deepEqual(built.models, [
      {
        name: "gpt",
        routes: [
          { provider: "openai", model: "gpt-4o-mini", weight: 3, priority: 0, ...route },
          { provider: "vllm", model: "llama", weight: 1, priority: 0, ...route },
          { provider: "mock", model: "mock", weight: 1, priority: 1, ...route },
        ],
        ...defaults,
      },
      { name: "solo", routes: [{ provider: "mock", model: "mock", weight: 1, priority: 0, ...route }], ...defaults },
    ]);
  });

  test("failover.sameRouteRetries reaches the snapshot", () => {
    const config = parseConfig(CONFIG.replace("  - name: solo\n", "  - name: solo\n    failover: { sameRouteRetries: always }\n"), {});
    const built = buildSnapshot(config, 1);
    assert.equal(built.models.find((model) => model.name === "solo")?.sameRouteRetries, "always");
    assert.equal(built.models.find((model) => model.name === "gpt")?.sameRouteRetries, "last-resort");
  });

  test("a provider without apiKey gets an empty key, default timeouts and every provider starts healthy", () => {
    const vllm = snapshot().providers[1];
    assert.ok(vllm);
    assert.equal(vllm.apiKey, "");
    assert.deepEqual(vllm.headers, {});
    assert.deepEqual(vllm.timeouts, { connectMs: 10_000, firstTokenMs: 60_000, idleMs: 60_000, totalMs: 0 });
    assert.equal(vllm.maxConnections, 256);
    assert.ok(snapshot().providers.every((p) => p.healthy));
  });

  test("the snapshot's headers are a copy, mutable although the config is frozen", () => {
    const config = parseConfig(CONFIG, {});
    const built = buildSnapshot(config, 1);
    const headers = built.providers[0]?.headers;
    assert.ok(headers);
    headers["x-extra"] = "1";
    assert.equal(Object.hasOwn(config.providers[0]?.headers ?? {}, "x-extra"), false);
  });

  test("createdAtMs defaults to now", () => {
    const before = Date.now();
    const built = buildSnapshot(parseConfig(CONFIG, {}), 1);
    assert.ok(built.createdAtMs >= before && built.createdAtMs <= Date.now());
  });
});

describe("client API keys in the snapshot", () => {
  const withAuth = `${CONFIG}
auth:
  apiKeys:
    - { name: team-a, key: "sk-client-key-of-team-a" }
`;

  test("the snapshot carries each key's name and SHA-256 digest, never the key", () => {
    const built = buildSnapshot(parseConfig(withAuth, {}), 1);
    assert.equal(built.clientAuth?.enabled, true);
    assert.deepEqual(
      built.clientAuth?.keys.map((key) => ({ name: key.name, sha256: Buffer.from(key.sha256).toString("hex") })),
      [{ name: "team-a", sha256: createHash("sha256").update("sk-client-key-of-team-a").digest("hex") }],
    );
    assert.equal(JSON.stringify(RoutingSnapshot.toJSON(built)).includes("sk-client-key-of-team-a"), false);
  });

  test("an admin key is marked in the snapshot; keys are not admin by default", () => {
    const built = buildSnapshot(parseConfig(`${withAuth}    - { name: ops, key: "sk-admin-key-of-the-ops", admin: true }\n`, {}), 1);
    assert.deepEqual(
      built.clientAuth?.keys.map((key) => [key.name, key.admin]),
      [
        ["team-a", false],
        ["ops", true],
      ],
    );
  });

  test("no auth section: the snapshot says the gateway is open", () => {
    assert.deepEqual(buildSnapshot(parseConfig(CONFIG, {}), 1).clientAuth, { enabled: false, keys: [] });
  });

  test("the ingress's view keeps the key digests; the worker's view has none", () => {
    const built = buildSnapshot(parseConfig(withAuth, {}), 1);
    assert.equal(redactForIngress(built).clientAuth?.keys.length, 1);
    assert.equal(redactForWorker(built).clientAuth, undefined);
    assert.deepEqual(redactForWorker(built).providers, built.providers);
  });
});

describe("redactForIngress", () => {
  test("removes apiKey and headers of every provider and keeps everything else", () => {
    const original = snapshot();
    const redacted = redactForIngress(original);
    for (const provider of redacted.providers) {
      assert.equal(provider.apiKey, "");
      assert.deepEqual(provider.headers, {});
    }
    assert.equal(JSON.stringify(redacted).includes("sk-secret"), false);
    assert.equal(JSON.stringify(redacted).includes("org-1"), false);
    assert.equal(redacted.version, original.version);
    assert.equal(redacted.createdAtMs, original.createdAtMs);
    assert.deepEqual(redacted.models, original.models);
    assert.deepEqual(
      redacted.providers.map(({ apiKey: _k, headers: _h, ...rest }) => rest),
      original.providers.map(({ apiKey: _k, headers: _h, ...rest }) => rest),
    );
  });

  test("does not modify the snapshot it is given", () => {
    const original = snapshot();
    redactForIngress(original);
    assert.equal(original.providers[0]?.apiKey, "sk-secret");
    assert.deepEqual(original.providers[0]?.headers, { "OpenAI-Organization": "org-1" });
  });
});

describe("route priorities: list order is the failover order", () => {
  const PROVIDERS = ["a", "b", "c", "d"].map((name) => `  - { name: ${name}, type: openai, baseUrl: "http://${name}/v1" }`).join("\n");
  /** A model `m` with the routes given as YAML flow maps, one a line. */
  const tableOf = (strategy: string, ...routes: string[]) =>
    new RoutingTable(
      buildSnapshot(
        parseConfig(
          `providers:\n${PROVIDERS}\nmodels:\n  - name: m\n    strategy: ${strategy}\n    routes:\n${routes.map((r) => `      - ${r}`).join("\n")}\n`,
          {},
        ),
        1,
      ),
    );

  test("[primary, backup] without priority: the primary leads every plan, whatever the strategy, health, key and draw", () => {
    // Health that favours the backup: idle and fast, the primary busy and slow.
    const health = fakeHealth({ a: 9, b: 0 }, { a: 900, b: 1 });
    for (const strategy of ["weighted", "least-inflight", "latency", "affinity"]) {
      const table = tableOf(strategy, "{ provider: a, model: a-up }", "{ provider: b, model: b-up, weight: 100 }");
      assert.deepEqual(
        table.model("m")?.routes.map((route) => route.priority),
        [0, 1],
      );
      const random = seededRandom(23);
      for (let draw = 0; draw < 500; draw++) {
        assert.deepEqual(names(table.planRoutes("m", health, `session:${draw}`, random)), ["a", "b"], strategy);
      }
    }
  });

  test("a route without priority comes after every route listed above it; an explicit priority stays as it is", () => {
    const cases: Array<{ routes: Array<number | undefined>; effective: number[] }> = [
      { routes: [undefined, undefined, undefined], effective: [0, 1, 2] },
      // Two that share the load, then a backup.
      { routes: [0, 0, undefined], effective: [0, 0, 1] },
      // A primary, then two backups that share the load.
      { routes: [undefined, 1, 1], effective: [0, 1, 1] },
      // Spaced priorities: an unmarked route still comes last, never first.
      { routes: [10, 10, undefined], effective: [10, 10, 11] },
      { routes: [5, 1, undefined], effective: [5, 1, 6] },
      // An explicit priority joins the group of that number, an unmarked route's included.
      { routes: [undefined, 0], effective: [0, 0] },
      { routes: [], effective: [] },
    ];
    for (const { routes, effective } of cases) {
      assert.deepEqual(effectivePriorities(routes.map((priority) => (priority === undefined ? {} : { priority }))), effective, JSON.stringify(routes));
    }
  });

  test("buildSnapshot carries the effective priorities: a mixed list plans as documented", () => {
    const table = tableOf(
      "weighted",
      "{ provider: a, model: a-up, priority: 0 }",
      "{ provider: b, model: b-up, priority: 0 }",
      "{ provider: c, model: c-up }",
      "{ provider: d, model: d-up }",
    );
    assert.deepEqual(
      table.model("m")?.routes.map((route) => route.priority),
      [0, 0, 1, 2],
    );
    const random = seededRandom(31);
    const leaders = new Set<string>();
    for (let draw = 0; draw < 200; draw++) {
      const plan = names(table.planRoutes("m", undefined, "", random));
      assert.deepEqual(plan.slice(2), ["c", "d"], "the unmarked routes follow, in list order");
      leaders.add(plan[0] ?? "");
    }
    assert.deepEqual([...leaders].sort(), ["a", "b"], "a and b, given the same priority, share the load");
  });
});

describe("RoutingTable", () => {
  test("looks up models and providers by name and lists model names", () => {
    const table = new RoutingTable(snapshot());
    assert.equal(table.version, 5);
    assert.equal(table.model("gpt")?.routes.length, 3);
    assert.equal(table.model("nope"), undefined);
    assert.equal(table.provider("vllm")?.baseUrl, "http://vllm:8000/v1");
    assert.equal(table.provider("nope"), undefined);
    assert.deepEqual(table.modelNames, ["gpt", "solo"]);
  });

  test("planRoutes of an unknown model is empty", () => {
    assert.deepEqual(new RoutingTable(snapshot()).planRoutes("nope", undefined, ""), []);
  });

  test("lower priority comes first whatever the weights and the random draw", () => {
    const table = new RoutingTable(
      snapshotWith([
        { provider: "c", priority: 2, weight: 100 },
        { provider: "a", priority: 0, weight: 1 },
        { provider: "b", priority: 1, weight: 50 },
      ]),
    );
    const random = seededRandom(1);
    for (let i = 0; i < 200; i++) {
      assert.deepEqual(
        table.planRoutes("m", undefined, "", random).map((r) => r.provider),
        ["a", "b", "c"],
      );
    }
  });

  test("every route appears exactly once", () => {
    const table = new RoutingTable(snapshot());
    const random = seededRandom(2);
    for (let i = 0; i < 100; i++) {
      const providers = table.planRoutes("gpt", undefined, "", random).map((r) => r.provider);
      assert.equal(providers.length, 3);
      assert.deepEqual([...providers].sort(), ["mock", "openai", "vllm"]);
      assert.equal(providers[2], "mock");
    }
  });

  test("within a priority group, weight 3 vs 1 puts the heavier route first about 75% of the time", () => {
    const table = new RoutingTable(
      snapshotWith([
        { provider: "light", weight: 1 },
        { provider: "heavy", weight: 3 },
      ]),
    );
    const random = seededRandom(0xc0ffee);
    const draws = 10_000;
    let heavyFirst = 0;
    for (let i = 0; i < draws; i++) {
      if (table.planRoutes("m", undefined, "", random)[0]?.provider === "heavy") heavyFirst += 1;
    }
    const share = heavyFirst / draws;
    assert.ok(share >= 0.7 && share <= 0.8, `heavy first in ${share} of draws`);
  });

  test("equal weights give each route first place about half the time", () => {
    const table = new RoutingTable(snapshotWith([{ provider: "a" }, { provider: "b" }]));
    const random = seededRandom(42);
    let aFirst = 0;
    for (let i = 0; i < 10_000; i++) if (table.planRoutes("m", undefined, "", random)[0]?.provider === "a") aFirst += 1;
    assert.ok(aFirst / 10_000 > 0.45 && aFirst / 10_000 < 0.55, `a first in ${aFirst / 10_000}`);
  });

  test("a route whose provider is not in the snapshot still counts as a candidate", () => {
    const base = snapshotWith([{ provider: "known" }, { provider: "ghost", priority: 1 }]);
    const table = new RoutingTable({ ...base, providers: base.providers.filter((p) => p.name === "known") });
    assert.deepEqual(
      table.planRoutes("m", undefined, "", seededRandom(5)).map((r) => r.provider),
      ["known", "ghost"],
    );
  });
});

describe("RoutingTable.providerForRoute", () => {
  const config = parseConfig(
    `
providers:
  - { name: p, type: openai, baseUrl: "http://p/v1", timeouts: { connect: 3s, firstToken: 30s, idle: 20s } }
models:
  - name: fast
    routes: [{ provider: p, model: small, timeouts: { idle: 2s } }]
  - name: plain
    routes: [{ provider: p, model: big }]
`,
    {},
  );
  const table = new RoutingTable(buildSnapshot(config, 1));

  test("a route's own timeouts override the provider's, field by field; connect stays the provider's", () => {
    const provider = table.providerForRoute("fast", { provider: "p", model: "small" });
    assert.deepEqual(provider?.timeouts, { connectMs: 3_000, firstTokenMs: 30_000, idleMs: 2_000, totalMs: 0 });
  });

  test("a route without timeouts uses the provider as it is", () => {
    assert.equal(table.providerForRoute("plain", { provider: "p", model: "big" }), table.provider("p"));
  });

  test("an unknown provider is undefined", () => {
    assert.equal(table.providerForRoute("plain", { provider: "nope", model: "big" }), undefined);
  });
});

describe("orderGroup and RoutingTable.planRoutes", () => {
  type Candidate = { provider: string; model: string; weight: number };
  const candidate = (provider: string, weight = 1): Candidate => ({ provider, model: `${provider}-up`, weight });
  const never = () => {
    throw new Error("random must not be drawn");
  };

  /** How often each provider comes first over `draws` orderings. */
  function firstShares(draws: number, order: (draw: number) => readonly { provider: string }[]): Map<string, number> {
    const counts = new Map<string, number>();
    for (let draw = 0; draw < draws; draw++) {
      const first = order(draw)[0]?.provider ?? "";
      counts.set(first, (counts.get(first) ?? 0) + 1);
    }
    return new Map([...counts].map(([name, count]) => [name, count / draws]));
  }

  function assertNear(actual: number | undefined, expected: number, tolerance: number, what: string): void {
    assert.ok(actual !== undefined && Math.abs(actual - expected) <= tolerance, `${what}: ${actual} not within ${tolerance} of ${expected}`);
  }

  describe("weighted", () => {
    const group = [candidate("a", 1), candidate("b", 2), candidate("c", 3), candidate("d", 4)];

    test("is deterministic given the random source and always a permutation of the group", () => {
      for (let seed = 0; seed < 50; seed++) {
        const once = orderGroup(group, "weighted", undefined, "", seededRandom(seed));
        assert.deepEqual(orderGroup(group, "weighted", undefined, "", seededRandom(seed)), once);
        assert.deepEqual(names(once).sort(), ["a", "b", "c", "d"]);
      }
    });

    test("over many draws, first place follows the weights", () => {
      const random = seededRandom(0xbeef);
      const shares = firstShares(20_000, () => orderGroup(group, "weighted", undefined, "", random));
      for (const route of group) assertNear(shares.get(route.provider), route.weight / 10, 0.015, `${route.provider} first`);
    });

    test("does not change the group it is given", () => {
      const copy = [...group];
      orderGroup(group, "weighted", undefined, "", seededRandom(1));
      assert.deepEqual(group, copy);
    });

    test("a group of one or none is returned as it is, without drawing", () => {
      assert.deepEqual(orderGroup([], "weighted", undefined, "", never), []);
      assert.deepEqual(orderGroup([candidate("a")], "latency", fakeHealth({}), "k", never), [candidate("a")]);
    });

    test("an unknown strategy orders like weighted", () => {
      for (let seed = 0; seed < 20; seed++) {
        assert.deepEqual(orderGroup(group, "bogus", undefined, "", seededRandom(seed)), orderGroup(group, "weighted", undefined, "", seededRandom(seed)));
      }
    });
  });

  describe("least-inflight", () => {
    test("fewest in-flight requests first, whatever the weights and the draw", () => {
      const group = [candidate("a", 100), candidate("b", 1), candidate("c", 10)];
      const health = fakeHealth({ a: 5, b: 0, c: 2 });
      const random = seededRandom(7);
      for (let draw = 0; draw < 200; draw++) assert.deepEqual(names(orderGroup(group, "least-inflight", health, "", random)), ["b", "c", "a"]);
    });

    test("ties keep the weighted random order", () => {
      const group = [candidate("a", 1), candidate("b", 3), candidate("idle", 1)];
      const health = fakeHealth({ a: 1, b: 1, idle: 0 });
      for (let seed = 0; seed < 100; seed++) {
        const weighted = names(orderGroup(group, "weighted", undefined, "", seededRandom(seed)));
        const least = names(orderGroup(group, "least-inflight", health, "", seededRandom(seed)));
        assert.deepEqual(least, ["idle", ...weighted.filter((name) => name !== "idle")]);
      }
      const random = seededRandom(11);
      const secondShares = firstShares(10_000, () => orderGroup(group, "least-inflight", health, "", random).slice(1));
      assertNear(secondShares.get("b"), 0.75, 0.02, "b before a among the tied");
    });

    test("without a health view it orders like weighted", () => {
      const group = [candidate("a", 1), candidate("b", 3)];
      for (let seed = 0; seed < 20; seed++) {
        assert.deepEqual(
          orderGroup(group, "least-inflight", undefined, "", seededRandom(seed)),
          orderGroup(group, "weighted", undefined, "", seededRandom(seed)),
        );
      }
    });
  });

  describe("latency", () => {
    const group = [candidate("fast"), candidate("mid"), candidate("slow")];
    const health = fakeHealth({}, { fast: 100, mid: 200, slow: 300 });

    test("power of two choices: the faster of the two routes sampled first wins", () => {
      const ttft = { fast: 100, mid: 200, slow: 300 } as Record<string, number>;
      for (let seed = 0; seed < 100; seed++) {
        const [x, y] = names(orderGroup(group, "weighted", undefined, "", seededRandom(seed))) as [string, string];
        const expected = (ttft[y] ?? 0) < (ttft[x] ?? 0) ? y : x;
        assert.equal(orderGroup(group, "latency", health, "", seededRandom(seed))[0]?.provider, expected);
      }
    });

    test("the slowest route is never first, the fastest is first about 2/3 of the time, and the rest is sorted by TTFT", () => {
      const random = seededRandom(99);
      let fastFirst = 0;
      const draws = 6_000;
      for (let draw = 0; draw < draws; draw++) {
        const order = names(orderGroup(group, "latency", health, "", random));
        assert.ok(
          ["fast,mid,slow", "mid,fast,slow"].includes(order.join()),
          `unexpected order ${order.join()}: the rest after the winner must be sorted by TTFT and the slowest never wins`,
        );
        if (order[0] === "fast") fastFirst += 1;
      }
      assertNear(fastFirst / draws, 2 / 3, 0.03, "fast first");
    });

    test("a route without a TTFT sample counts as the fastest", () => {
      const two = [candidate("known", 10), candidate("fresh", 1)];
      const random = seededRandom(5);
      for (let draw = 0; draw < 100; draw++) {
        assert.deepEqual(names(orderGroup(two, "latency", fakeHealth({}, { known: 50 }), "", random)), ["fresh", "known"]);
      }
      const three = [candidate("a"), candidate("b"), candidate("fresh")];
      const view = fakeHealth({}, { a: 100, b: 200 });
      for (let draw = 0; draw < 200; draw++) {
        const order = names(orderGroup(three, "latency", view, "", random));
        assert.ok(order.indexOf("fresh") <= 1, `fresh must be first or right after the winner: ${order.join()}`);
        assert.equal(order[2], "b");
      }
    });

    test("without a health view it orders like weighted", () => {
      for (let seed = 0; seed < 20; seed++) {
        assert.deepEqual(orderGroup(group, "latency", undefined, "", seededRandom(seed)), orderGroup(group, "weighted", undefined, "", seededRandom(seed)));
      }
    });
  });

  describe("affinity", () => {
    const group = [candidate("a"), candidate("b"), candidate("c"), candidate("d")];

    test("the same key gives the same order every time, without drawing", () => {
      for (let key = 0; key < 50; key++) {
        const first = orderGroup(group, "affinity", undefined, `session:${key}`, never);
        for (let again = 0; again < 5; again++) assert.deepEqual(orderGroup(group, "affinity", undefined, `session:${key}`, never), first);
        assert.deepEqual(names(first).sort(), ["a", "b", "c", "d"]);
      }
    });

    test("the order does not depend on the order of the group", () => {
      const reversed = [...group].reverse();
      for (let key = 0; key < 50; key++) {
        assert.deepEqual(orderGroup(reversed, "affinity", undefined, `user:${key}`, never), orderGroup(group, "affinity", undefined, `user:${key}`, never));
      }
    });

    test("different keys spread across the routes by weight", () => {
      const even = firstShares(8_000, (key) => orderGroup(group, "affinity", undefined, `session:${key}`, never));
      for (const route of group) assertNear(even.get(route.provider), 0.25, 0.03, `${route.provider} first`);
      const weighted = [candidate("light", 1), candidate("heavy", 3)];
      const shares = firstShares(8_000, (key) => orderGroup(weighted, "affinity", undefined, `prefix:${key.toString(16)}`, never));
      assertNear(shares.get("heavy"), 0.75, 0.03, "heavy first");
    });

    test("removing a route only moves the keys that were on it, and keeps everyone else's order", () => {
      const without = group.filter((route) => route.provider !== "c");
      let moved = 0;
      for (let key = 0; key < 2_000; key++) {
        const full = names(orderGroup(group, "affinity", undefined, `session:${key}`, never));
        const reduced = names(orderGroup(without, "affinity", undefined, `session:${key}`, never));
        assert.deepEqual(
          reduced,
          full.filter((name) => name !== "c"),
        );
        if (full[0] !== reduced[0]) {
          assert.equal(full[0], "c", "only keys that were on the removed route move");
          moved += 1;
        }
      }
      assert.ok(moved > 300 && moved < 700, `about a quarter of the keys were on c: ${moved}`);
    });

    test("adding a route only takes keys to the new route", () => {
      const grown = [...group, candidate("e")];
      for (let key = 0; key < 2_000; key++) {
        const before = orderGroup(group, "affinity", undefined, `session:${key}`, never)[0]?.provider;
        const after = orderGroup(grown, "affinity", undefined, `session:${key}`, never)[0]?.provider;
        assert.ok(after === before || after === "e", `key ${key} moved from ${before} to ${after}`);
      }
    });

    test("without a key it orders like weighted", () => {
      for (let seed = 0; seed < 20; seed++) {
        assert.deepEqual(orderGroup(group, "affinity", undefined, "", seededRandom(seed)), orderGroup(group, "weighted", undefined, "", seededRandom(seed)));
      }
    });
  });

  describe("planRoutes", () => {
    const config = (strategy: string) =>
      parseConfig(
        `
providers:
  - { name: a, type: openai, baseUrl: "http://a/v1" }
  - { name: b, type: openai, baseUrl: "http://b/v1" }
  - { name: c, type: openai, baseUrl: "http://c/v1" }
  - { name: d, type: openai, baseUrl: "http://d/v1" }
models:
  - name: tiers
    strategy: ${strategy}
    routes:
      - { provider: a, model: a-up, priority: 2, weight: 100 }
      - { provider: b, model: b-up, priority: 0 }
      - { provider: c, model: c-up, priority: 1, weight: 50 }
      - { provider: d, model: d-up, priority: 0, weight: 5 }
`,
        {},
      );

    test("lower priority groups always come first, whatever the strategy, health, key and draw", () => {
      // Health that favours the later tiers: a and c idle and fast, b and d busy and slow.
      const health = fakeHealth({ a: 0, b: 9, c: 0, d: 9 }, { a: 1, b: 900, c: 1, d: 900 });
      for (const strategy of ["weighted", "least-inflight", "latency", "affinity"]) {
        const table = new RoutingTable(buildSnapshot(config(strategy), 1));
        const random = seededRandom(17);
        for (let draw = 0; draw < 200; draw++) {
          const plan = table.planRoutes("tiers", health, `session:${draw}`, random);
          assert.deepEqual(names(plan.slice(0, 2)).sort(), ["b", "d"], strategy);
          assert.deepEqual(names(plan.slice(2)), ["c", "a"], strategy);
        }
      }
    });

    test("returns the route specs of the model, each once", () => {
      const table = new RoutingTable(buildSnapshot(config("weighted"), 1));
      const plan = table.planRoutes("tiers", undefined, "", seededRandom(3));
      assert.deepEqual(
        [...plan].sort((x, y) => x.provider.localeCompare(y.provider)),
        [...(table.model("tiers")?.routes ?? [])].sort((x, y) => x.provider.localeCompare(y.provider)),
      );
    });

    test("an unknown model plans nothing", () => {
      assert.deepEqual(new RoutingTable(buildSnapshot(config("weighted"), 1)).planRoutes("nope", undefined, ""), []);
    });

    test("reads live health from a HealthBook: least-inflight puts the less busy route of a group first", () => {
      const table = new RoutingTable(buildSnapshot(config("least-inflight"), 1));
      const health = new HealthBook(
        () => DEFAULT_HEALTH_SETTINGS,
        () => 1_000_000,
      );
      const busy = (provider: string, count: number) =>
        health.apply({
          provider,
          model: `${provider}-up`,
          workerId: "w9",
          kind: OutcomeKind.OUTCOME_KIND_STARTED,
          ttftMs: 0,
          retryAfterMs: 0,
          tokens: 0,
          errorCode: "",
          atMs: 1_000_000,
          workerInFlight: count,
        });
      busy("d", 3);
      const random = seededRandom(8);
      for (let draw = 0; draw < 50; draw++) assert.deepEqual(names(table.planRoutes("tiers", health, "", random)), ["b", "d", "c", "a"]);
      busy("b", 4);
      for (let draw = 0; draw < 50; draw++) assert.deepEqual(names(table.planRoutes("tiers", health, "", random)), ["d", "b", "c", "a"]);
    });

    test("affinity keeps one key on one route across calls and spreads keys over the first group", () => {
      const table = new RoutingTable(buildSnapshot(config("affinity"), 1));
      const firsts = new Set<string>();
      for (let key = 0; key < 200; key++) {
        const plan = names(table.planRoutes("tiers", undefined, `session:${key}`, never));
        assert.deepEqual(names(table.planRoutes("tiers", undefined, `session:${key}`, never)), plan);
        firsts.add(plan[0] ?? "");
      }
      assert.deepEqual([...firsts].sort(), ["b", "d"]);
    });
  });

  describe("affinityKeyFor", () => {
    function chat(messages: Array<[role: string, text: string]>, user = ""): ChatRequest {
      return {
        messages: messages.map(([role, text]) => ({ role, content: [{ part: { $case: "text", value: text } }], name: "", toolCallId: "", toolCalls: [] })),
        stop: [],
        tools: [],
        toolChoiceJson: "",
        includeUsage: false,
        user,
      };
    }
    const SYSTEM = "You are a terse assistant.";

    test("the session id comes first, then the request's user, then the prompt's prefix", () => {
      const request = chat([["user", "hi"]], "alice");
      assert.equal(affinityKeyFor(request, "s-1"), "session:s-1");
      assert.equal(affinityKeyFor(request), "user:alice");
      assert.equal(affinityKeyFor(request, ""), "user:alice");
      assert.match(affinityKeyFor(chat([["user", "hi"]])), /^prefix:[0-9a-f]+$/);
    });

    test("two turns of one conversation share the prefix key", () => {
      const first = chat([
        ["system", SYSTEM],
        ["user", "What is NATS?"],
      ]);
      const second = chat([
        ["system", SYSTEM],
        ["user", "What is NATS?"],
        ["assistant", "A messaging system."],
        ["user", "And JetStream?"],
      ]);
      assert.equal(affinityKeyFor(second), affinityKeyFor(first));
      assert.equal(
        affinityKeyFor(chat([["user", "Q"]])),
        affinityKeyFor(
          chat([
            ["user", "Q"],
            ["assistant", "A"],
            ["user", "Q2"],
          ]),
        ),
      );
    });

    test("different system prompts, or different first questions, give different keys", () => {
      const base = affinityKeyFor(
        chat([
          ["system", SYSTEM],
          ["user", "What is NATS?"],
        ]),
      );
      assert.notEqual(
        affinityKeyFor(
          chat([
            ["system", "You are verbose."],
            ["user", "What is NATS?"],
          ]),
        ),
        base,
      );
      assert.notEqual(
        affinityKeyFor(
          chat([
            ["system", SYSTEM],
            ["user", "What is gRPC?"],
          ]),
        ),
        base,
      );
      assert.notEqual(
        affinityKeyFor(
          chat([
            ["user", SYSTEM],
            ["user", "What is NATS?"],
          ]),
        ),
        base,
        "the role boundary matters",
      );
    });

    test("only the prompt's first 1024 characters count", () => {
      const long = "x".repeat(1_024);
      assert.equal(
        affinityKeyFor(
          chat([
            ["system", `${long}tail one`],
            ["user", "q"],
          ]),
        ),
        affinityKeyFor(
          chat([
            ["system", `${long}tail two`],
            ["user", "q"],
          ]),
        ),
      );
      assert.notEqual(
        affinityKeyFor(
          chat([
            ["system", `${long.slice(1)}A`],
            ["user", "q"],
          ]),
        ),
        affinityKeyFor(
          chat([
            ["system", `${long.slice(1)}B`],
            ["user", "q"],
          ]),
        ),
      );
    });
  });
});
