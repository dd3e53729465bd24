import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseConfig } from "./config.js";
import { buildSnapshot, type RoutingSnapshot, RoutingTable, redactForIngress } from "./routing.js";

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
      - { provider: openai, model: gpt-4o-mini, weight: 3 }
      - { provider: vllm, model: llama, weight: 1 }
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

function snapshot(): RoutingSnapshot {
  return buildSnapshot(parseConfig(CONFIG, {}), 5, 1_700_000_000_000);
}

/** A snapshot with one model whose routes are given directly. */
function snapshotWith(routes: Array<{ provider: string; weight?: number; priority?: number }>, unhealthy: string[] = []): RoutingSnapshot {
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
      healthy: !unhealthy.includes(name),
      retries: undefined,
      failOnMalformedChunk: false,
      continueFinalMessage: false,
      requestsPerMinute: 0,
      tokensPerMinute: 0,
      circuit: undefined,
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
    });
    const inherit = { connectMs: 0, firstTokenMs: 0, idleMs: 0, totalMs: 0 };
    assert.deepEqual(built.models, [
      {
        name: "gpt",
        routes: [
          { provider: "openai", model: "gpt-4o-mini", weight: 3, priority: 0, timeouts: inherit },
          { provider: "vllm", model: "llama", weight: 1, priority: 0, timeouts: inherit },
          { provider: "mock", model: "mock", weight: 1, priority: 1, timeouts: inherit },
        ],
      },
      { name: "solo", routes: [{ provider: "mock", model: "mock", weight: 1, priority: 0, timeouts: inherit }] },
    ]);
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

  test("orderRoutes of an unknown model is empty", () => {
    assert.deepEqual(new RoutingTable(snapshot()).orderRoutes("nope"), []);
  });

  test("orderRoutes returns provider and upstream model only", () => {
    assert.deepEqual(new RoutingTable(snapshot()).orderRoutes("solo"), [{ provider: "mock", model: "mock" }]);
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
        table.orderRoutes("m", random).map((r) => r.provider),
        ["a", "b", "c"],
      );
    }
  });

  test("every route appears exactly once", () => {
    const table = new RoutingTable(snapshot());
    const random = seededRandom(2);
    for (let i = 0; i < 100; i++) {
      const providers = table.orderRoutes("gpt", random).map((r) => r.provider);
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
      if (table.orderRoutes("m", random)[0]?.provider === "heavy") heavyFirst += 1;
    }
    const share = heavyFirst / draws;
    assert.ok(share >= 0.7 && share <= 0.8, `heavy first in ${share} of draws`);
  });

  test("equal weights give each route first place about half the time", () => {
    const table = new RoutingTable(snapshotWith([{ provider: "a" }, { provider: "b" }]));
    const random = seededRandom(42);
    let aFirst = 0;
    for (let i = 0; i < 10_000; i++) if (table.orderRoutes("m", random)[0]?.provider === "a") aFirst += 1;
    assert.ok(aFirst / 10_000 > 0.45 && aFirst / 10_000 < 0.55, `a first in ${aFirst / 10_000}`);
  });

  test("routes to unhealthy providers go last, after every healthy route of any priority", () => {
    const table = new RoutingTable(
      snapshotWith(
        [
          { provider: "sick", priority: 0, weight: 100 },
          { provider: "well", priority: 0 },
          { provider: "backup", priority: 1 },
        ],
        ["sick"],
      ),
    );
    const random = seededRandom(3);
    for (let i = 0; i < 100; i++) {
      assert.deepEqual(
        table.orderRoutes("m", random).map((r) => r.provider),
        ["well", "backup", "sick"],
      );
    }
  });

  test("unhealthy routes keep their priority order among themselves", () => {
    const table = new RoutingTable(
      snapshotWith(
        [
          { provider: "late", priority: 1 },
          { provider: "early", priority: 0 },
          { provider: "ok", priority: 2 },
        ],
        ["late", "early"],
      ),
    );
    assert.deepEqual(
      table.orderRoutes("m", seededRandom(4)).map((r) => r.provider),
      ["ok", "early", "late"],
    );
  });

  test("a route whose provider is not in the snapshot still counts as a candidate", () => {
    const base = snapshotWith([{ provider: "known" }, { provider: "ghost", priority: 1 }]);
    const table = new RoutingTable({ ...base, providers: base.providers.filter((p) => p.name === "known") });
    assert.deepEqual(
      table.orderRoutes("m", seededRandom(5)).map((r) => r.provider),
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
