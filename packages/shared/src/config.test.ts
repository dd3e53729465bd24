import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { ConfigError, loadConfig, loadSettings, parseConfig, parseDuration } from "./config.js";

const MINIMAL = `
providers:
  - name: openai
    type: openai
    baseUrl: https://api.openai.com/v1
    apiKey: sk-test
models:
  - name: gpt
    routes:
      - provider: openai
        model: gpt-4o-mini
`;

/** Asserts that `fn` throws a ConfigError whose message contains every one of `parts`. */
function assertConfigError(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.equal(error.name, "ConfigError");
    for (const part of parts) assert.ok(error.message.includes(part), `message ${JSON.stringify(error.message)} should contain ${JSON.stringify(part)}`);
    return true;
  });
}

/** A one-provider, one-model config with extra YAML lines spliced into the provider. */
function withProviderLines(...lines: string[]): string {
  return `
providers:
  - name: p
    type: openai
    baseUrl: http://127.0.0.1:1/v1
${lines.map((line) => `    ${line}`).join("\n")}
models:
  - name: m
    routes:
      - { provider: p, model: up }
`;
}

describe("parseConfig defaults", () => {
  test("a minimal valid config gets default provider timeouts, headers, pool size, route weight and failover settings; a route's priority stays unset", () => {
    const config = parseConfig(MINIMAL, {});
    assert.equal(config.providers.length, 1);
    const provider = config.providers[0];
    assert.ok(provider);
    assert.equal(provider.name, "openai");
    assert.equal(provider.type, "openai");
    assert.equal(provider.baseUrl, "https://api.openai.com/v1");
    assert.equal(provider.apiKey, "sk-test");
    assert.deepEqual(provider.headers, {});
    assert.deepEqual(provider.timeouts, { connect: 10_000, firstToken: 60_000, idle: 60_000, total: 0 });
    assert.equal(provider.maxConnections, 256);
    assert.deepEqual(provider.limits, {});
    assert.deepEqual(provider.circuit, { failureThreshold: 5, probeInterval: 10_000 });
    assert.deepEqual(config.models, [
      {
        name: "gpt",
        routes: [{ provider: "openai", model: "gpt-4o-mini", weight: 1, acceptsPrefill: false }],
        strategy: "weighted",
        afterFirstToken: "error",
        failover: { maxRoutes: 3, budget: 30_000, onContentPolicy: false, sameRouteRetries: "last-resort" },
      },
    ]);
  });

  test("routing settings: strategy, policies, hedging, failover limits, prefill, context window, budgets and circuits", () => {
    const config = parseConfig(
      `providers:
  - name: a
    type: openai
    baseUrl: http://a/v1
    limits: { requestsPerMinute: 60, tokensPerMinute: 1000 }
    circuit: { failureThreshold: 2, probeInterval: 500ms }
models:
  - name: m
    strategy: affinity
    afterFirstToken: continue
    hedgeAfter: 250ms
    failover: { maxRoutes: 2, budget: 5s, onContentPolicy: true, sameRouteRetries: always }
    routes:
      - { provider: a, model: x, acceptsPrefill: true, contextWindow: 8192 }
      - { provider: a, model: y, priority: 3 }
`,
      {},
    );
    assert.deepEqual(config.providers[0]?.limits, { requestsPerMinute: 60, tokensPerMinute: 1000 });
    assert.deepEqual(config.providers[0]?.circuit, { failureThreshold: 2, probeInterval: 500 });
    const model = config.models[0];
    assert.equal(model?.strategy, "affinity");
    assert.equal(model?.afterFirstToken, "continue");
    assert.equal(model?.hedgeAfter, 250);
    assert.deepEqual(model?.failover, { maxRoutes: 2, budget: 5_000, onContentPolicy: true, sameRouteRetries: "always" });
    assert.deepEqual(model?.routes, [
      { provider: "a", model: "x", weight: 1, acceptsPrefill: true, contextWindow: 8192 },
      { provider: "a", model: "y", weight: 1, priority: 3, acceptsPrefill: false },
    ]);
    assertConfigError(() => parseConfig(`${MINIMAL.replace("- name: gpt", "- name: gpt\n    strategy: fastest")}`, {}), "strategy");
    assertConfigError(
      () => parseConfig(`${MINIMAL.replace("- name: gpt", "- name: gpt\n    failover: { sameRouteRetries: never }")}`, {}),
      "models[0].failover.sameRouteRetries",
    );
    assertConfigError(() => parseConfig(MINIMAL.replace("model: gpt-4o-mini", "model: gpt-4o-mini\n        priority: -1"), {}), "models[0].routes[0].priority");
  });

  test("the bus, worker and ingress sections default when absent", () => {
    const config = parseConfig(MINIMAL, {});
    assert.deepEqual(config.bus, {
      eventsRetention: 10 * 60_000,
      eventsMaxBytes: 1024 * 1024 * 1024,
      eventsStorage: "file",
      jobMaxAge: 5 * 60_000,
      jobAckWait: 30_000,
      streamRecordTtl: 60 * 60_000,
      bodiesMaxBytes: 1024 * 1024 * 1024,
    });
    assert.deepEqual(config.worker, { concurrency: 256, drainTimeout: 30_000 });
    assert.deepEqual(config.ingress, {
      heartbeatInterval: 15_000,
      holdHeaders: 500,
      holdHeadersMax: 10_000,
      maxClientBufferBytes: 1024 * 1024,
      bodyLimitBytes: 8 * 1024 * 1024,
      detachGrace: 3_000,
      drainTimeout: 10_000,
      readerBufferEvents: 256,
      stuckClientTimeout: 300_000,
    });
    assert.equal(config.auth, undefined);
  });

  test("a partially given section keeps the defaults of the fields it omits", () => {
    const config = parseConfig(`${MINIMAL}\nworker:\n  concurrency: 8\nbus:\n  eventsStorage: memory\n`, {});
    assert.deepEqual(config.worker, { concurrency: 8, drainTimeout: 30_000 });
    assert.equal(config.bus.eventsStorage, "memory");
    assert.equal(config.bus.jobAckWait, 30_000);
  });

  test("defaults are the same on every parse: values from one config never leak into the next", () => {
    const before = parseConfig(MINIMAL, {});
    const custom = parseConfig(withProviderLines("headers: { x-org: acme }", "timeouts: { idle: 5s }"), {});
    const after = parseConfig(MINIMAL, {});
    assert.deepEqual(custom.providers[0]?.headers, { "x-org": "acme" });
    assert.equal(custom.providers[0]?.timeouts.idle, 5_000);
    assert.deepEqual(after.providers[0]?.headers, {});
    assert.equal(after.providers[0]?.timeouts.idle, 60_000);
    assert.deepEqual(after, before);
  });
});

describe("durations", () => {
  test('"250ms", "15s", "10m" and "1h" become milliseconds', () => {
    const config = parseConfig(withProviderLines("timeouts: { connect: 250ms, firstToken: 15s, idle: 10m, total: 1h }"), {});
    assert.deepEqual(config.providers[0]?.timeouts, { connect: 250, firstToken: 15_000, idle: 600_000, total: 3_600_000 });
  });

  test("a plain number is taken as milliseconds", () => {
    const config = parseConfig(withProviderLines("timeouts: { connect: 1234, idle: 0 }"), {});
    assert.equal(config.providers[0]?.timeouts.connect, 1234);
    assert.equal(config.providers[0]?.timeouts.idle, 0);
    assert.equal(config.providers[0]?.timeouts.firstToken, 60_000);
  });

  test("durations in the bus and ingress sections are converted too", () => {
    const config = parseConfig(`${MINIMAL}\nbus:\n  eventsRetention: 2h\ningress:\n  heartbeatInterval: 500ms\n`, {});
    assert.equal(config.bus.eventsRetention, 7_200_000);
    assert.equal(config.ingress.heartbeatInterval, 500);
  });

  test("a malformed duration is rejected naming the field", () => {
    assertConfigError(
      () => parseConfig(withProviderLines("timeouts: { idle: 5 minutes }"), {}),
      'providers[0].timeouts.idle: expected a duration such as "500ms"',
    );
    assertConfigError(() => parseConfig(withProviderLines("timeouts: { idle: -5 }"), {}), "providers[0].timeouts.idle");
    assertConfigError(() => parseConfig(withProviderLines("timeouts: { idle: 1.5s }"), {}), "providers[0].timeouts.idle");
  });

  test("parseDuration converts each unit and rejects anything else", () => {
    assert.equal(parseDuration("0ms"), 0);
    assert.equal(parseDuration("250ms"), 250);
    assert.equal(parseDuration("15s"), 15_000);
    assert.equal(parseDuration("10m"), 600_000);
    assert.equal(parseDuration("1h"), 3_600_000);
    assert.throws(() => parseDuration("1d"), /not a duration: 1d/);
    assert.throws(() => parseDuration("s"), /not a duration/);
  });
});

describe("parseConfig errors name the field path", () => {
  test("a route to an unknown provider", () => {
    const text = MINIMAL.replace("provider: openai", "provider: nope");
    assertConfigError(() => parseConfig(text, {}), 'models[0].routes[0].provider: unknown provider "nope"', "known: openai");
  });

  test("the source name heads the message", () => {
    assertConfigError(() => parseConfig(MINIMAL.replace("provider: openai", "provider: nope"), {}, "/etc/runnel.yaml"), "/etc/runnel.yaml is invalid");
  });

  test("a duplicate provider name names the second occurrence", () => {
    const text = `
providers:
  - { name: a, type: openai, baseUrl: "http://127.0.0.1:1/v1" }
  - { name: a, type: mock, baseUrl: "http://127.0.0.1:2/v1" }
models:
  - name: m
    routes: [{ provider: a, model: x }]
`;
    assertConfigError(() => parseConfig(text, {}), 'providers[1].name: duplicate provider name "a"');
  });

  test("a duplicate model name names the second occurrence", () => {
    const text = `${MINIMAL}  - name: gpt\n    routes: [{ provider: openai, model: other }]\n`;
    assertConfigError(() => parseConfig(text, {}), 'models[1].name: duplicate model name "gpt"');
  });

  test("missing models", () => {
    const text = "providers:\n  - { name: a, type: openai, baseUrl: http://127.0.0.1:1/v1 }\n";
    assertConfigError(() => parseConfig(text, {}), "- models: Invalid input: expected array");
    assertConfigError(() => parseConfig(`${text}models: []\n`, {}), "models: at least one model is needed");
  });

  test("a model without routes", () => {
    const text = "providers:\n  - { name: a, type: openai, baseUrl: http://127.0.0.1:1/v1 }\nmodels:\n  - { name: m, routes: [] }\n";
    assertConfigError(() => parseConfig(text, {}), "models[0].routes: a model needs at least one route");
  });

  test("an empty document reports both providers and models", () => {
    assertConfigError(() => parseConfig("", {}), "- providers: Invalid input", "- models: Invalid input");
  });

  test("a bad baseUrl", () => {
    assertConfigError(() => parseConfig(MINIMAL.replace("https://api.openai.com/v1", "not a url"), {}), "providers[0].baseUrl");
    assertConfigError(() => parseConfig(MINIMAL.replace("https://api.openai.com/v1", "ftp://example.com/v1"), {}), "providers[0].baseUrl");
  });

  test("an unknown provider type", () => {
    assertConfigError(() => parseConfig(MINIMAL.replace("type: openai", "type: cohere"), {}), "providers[0].type");
  });

  test("an unknown key in a provider is rejected because schemas are strict", () => {
    assertConfigError(() => parseConfig(withProviderLines("apikey: typo"), {}), 'providers[0]: Unrecognized key: "apikey"');
  });

  test("an unknown key in a route, in timeouts and at the top level are rejected", () => {
    assertConfigError(() => parseConfig(MINIMAL.replace("model: gpt-4o-mini", "model: gpt-4o-mini\n        wieght: 2"), {}), "models[0].routes[0]", "wieght");
    assertConfigError(() => parseConfig(withProviderLines("timeouts: { connectTimeout: 5s }"), {}), "providers[0].timeouts", "connectTimeout");
    assertConfigError(() => parseConfig(`${MINIMAL}\nworkers:\n  concurrency: 4\n`, {}), '(root): Unrecognized key: "workers"');
  });

  test("a name with forbidden characters", () => {
    assertConfigError(() => parseConfig(MINIMAL.replace("- name: gpt", "- name: gpt 4"), {}), "models[0].name");
  });

  test("every wrong field is reported, not only the first", () => {
    const text = MINIMAL.replace("type: openai", "type: cohere").replace("provider: openai", "provider: nope").replace("https://api.openai.com/v1", "nope");
    assertConfigError(() => parseConfig(text, {}), "providers[0].type", "providers[0].baseUrl");
  });

  test("a document that is not a mapping is rejected at the root", () => {
    assertConfigError(() => parseConfig("- a\n- b\n", {}), "(root): Invalid input: expected object, received array");
  });

  test("invalid YAML is a ConfigError naming the source", () => {
    assertConfigError(() => parseConfig("providers: [ {name: a", {}, "bad.yaml"), "bad.yaml: not valid YAML");
    assertConfigError(() => parseConfig("a: 1\n  b: : 2\n", {}), "runnel.yaml: not valid YAML");
  });
});

/** A config reference to an environment variable: `${NAME}`, or `${NAME:-fallback}` with a fallback. */
function ref(name: string, fallback?: string): string {
  return `$\{${fallback === undefined ? name : `${name}:-${fallback}`}}`;
}

describe("environment variable expansion", () => {
  test("a variable reference is replaced by the variable's value", () => {
    const text = MINIMAL.replace("apiKey: sk-test", `apiKey: ${ref("OPENAI_API_KEY")}`);
    assert.equal(parseConfig(text, { OPENAI_API_KEY: "sk-from-env" }).providers[0]?.apiKey, "sk-from-env");
  });

  test("a reference with a default uses the default when the variable is unset or empty and the value otherwise", () => {
    const text = MINIMAL.replace("https://api.openai.com/v1", `http://${ref("HOST_X", "localhost")}:${ref("PORT_X", "8000")}/v1`);
    assert.equal(parseConfig(text, {}).providers[0]?.baseUrl, "http://localhost:8000/v1");
    assert.equal(parseConfig(text, { HOST_X: "", PORT_X: "" }).providers[0]?.baseUrl, "http://localhost:8000/v1");
    assert.equal(parseConfig(text, { HOST_X: "10.0.0.7", PORT_X: "9999" }).providers[0]?.baseUrl, "http://10.0.0.7:9999/v1");
  });

  test("an empty default is allowed", () => {
    const text = MINIMAL.replace("apiKey: sk-test", `apiKey: "${ref("MAYBE_KEY", "")}"`);
    assert.equal(parseConfig(text, {}).providers[0]?.apiKey, "");
  });

  test("variables are expanded inside nested maps such as headers", () => {
    const config = parseConfig(withProviderLines("headers:", `  x-org: org-${ref("ORG")}`), { ORG: "acme" });
    assert.deepEqual(config.providers[0]?.headers, { "x-org": "org-acme" });
  });

  test("an expanded value is validated after expansion", () => {
    const text = MINIMAL.replace("https://api.openai.com/v1", ref("BASE"));
    assertConfigError(() => parseConfig(text, { BASE: "not-a-url" }), "providers[0].baseUrl");
  });

  test("a missing variable names the field and the variable", () => {
    const text = MINIMAL.replace("apiKey: sk-test", `apiKey: ${ref("OPENAI_API_KEY")}`);
    assertConfigError(() => parseConfig(text, {}), "providers[0].apiKey", "OPENAI_API_KEY");
  });

  test("a missing variable deep in a list names the full path", () => {
    const text = MINIMAL.replace("model: gpt-4o-mini", `model: ${ref("UPSTREAM_MODEL")}`);
    assertConfigError(() => parseConfig(text, {}), "models[0].routes[0].model", "UPSTREAM_MODEL");
  });

  test("keys are not expanded", () => {
    const config = parseConfig(withProviderLines("headers:", `  ${ref("NOT_EXPANDED")}: v`), { NOT_EXPANDED: "x" });
    assert.deepEqual(config.providers[0]?.headers, { [ref("NOT_EXPANDED")]: "v" });
  });
});

describe("the parsed config is deeply frozen", () => {
  test("top level, arrays, nested objects and records cannot be changed", () => {
    const config = parseConfig(withProviderLines("headers: { a: b }"), {});
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.providers));
    assert.ok(Object.isFrozen(config.providers[0]));
    assert.ok(Object.isFrozen(config.providers[0]?.timeouts));
    assert.ok(Object.isFrozen(config.providers[0]?.headers));
    assert.ok(Object.isFrozen(config.models[0]?.routes[0]));
    assert.ok(Object.isFrozen(config.bus));
    assert.ok(Object.isFrozen(config.worker));
    assert.ok(Object.isFrozen(config.ingress));
  });

  test("writing to a frozen field throws in strict mode", () => {
    const config = parseConfig(MINIMAL, {});
    const provider = config.providers[0] as { name: string };
    assert.throws(() => {
      provider.name = "changed";
    }, TypeError);
    assert.equal(config.providers[0]?.name, "openai");
  });
});

describe("loadConfig", () => {
  test("without RUNNEL_CONFIG the default config serves model mock from the mock provider", () => {
    const config = loadConfig({});
    assert.deepEqual(
      config.models.map((m) => m.name),
      ["mock"],
    );
    assert.deepEqual(config.models[0]?.routes, [{ provider: "mock", model: "mock", weight: 1, acceptsPrefill: false }]);
    assert.equal(config.providers.length, 1);
    assert.equal(config.providers[0]?.name, "mock");
    assert.equal(config.providers[0]?.type, "mock");
    assert.equal(config.providers[0]?.baseUrl, "http://127.0.0.1:9001/v1");
  });

  test("the default config (a local demo, no auth) opens the console's inspector; a config of your own keeps it closed", () => {
    assert.deepEqual(loadConfig({}).console, { enabled: true, inspectorWithoutAuth: true });
    assert.deepEqual(parseConfig(MINIMAL, {}).console, { enabled: true, inspectorWithoutAuth: false });
    assert.equal(parseConfig(`${MINIMAL}console: { enabled: false }\n`, {}).console.enabled, false);
    assertConfigError(() => parseConfig(`${MINIMAL}console: { inspector: open }\n`, {}), "console");
  });

  test("API keys are not admin keys unless they say so", () => {
    const config = parseConfig(
      `${MINIMAL}auth:\n  apiKeys:\n    - { name: app, key: sk-app-key-0123456789 }\n    - { name: ops, key: sk-ops-key-0123456789, admin: true }\n`,
      {},
    );
    assert.deepEqual(
      config.auth?.apiKeys.map((key) => [key.name, key.admin]),
      [
        ["app", false],
        ["ops", true],
      ],
    );
  });

  test("MOCK_PORT and MOCK_HOST are expanded into the default config's baseUrl", () => {
    assert.equal(loadConfig({ MOCK_PORT: "9555" }).providers[0]?.baseUrl, "http://127.0.0.1:9555/v1");
    assert.equal(loadConfig({ MOCK_HOST: "mock.internal", MOCK_PORT: "80" }).providers[0]?.baseUrl, "http://mock.internal:80/v1");
  });

  test("an unreadable RUNNEL_CONFIG is a ConfigError naming the path", () => {
    assertConfigError(() => loadConfig({ RUNNEL_CONFIG: "/nonexistent" }), "RUNNEL_CONFIG=/nonexistent", "ENOENT");
  });

  test("RUNNEL_CONFIG is read, expanded and validated with the file path as the source", () => {
    const dir = mkdtempSync(join(tmpdir(), "runnel-config-test-"));
    try {
      const good = join(dir, "good.yaml");
      writeFileSync(good, MINIMAL.replace("apiKey: sk-test", `apiKey: ${ref("KEY")}`));
      assert.equal(loadConfig({ RUNNEL_CONFIG: good, KEY: "sk-file" }).providers[0]?.apiKey, "sk-file");
      const bad = join(dir, "bad.yaml");
      writeFileSync(bad, MINIMAL.replace("provider: openai", "provider: nope"));
      assertConfigError(() => loadConfig({ RUNNEL_CONFIG: bad }), `${bad} is invalid`, "models[0].routes[0].provider");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("loadSettings", () => {
  test("defaults when the environment is empty", () => {
    const settings = loadSettings({});
    assert.equal(settings.NATS_URL, "nats://127.0.0.1:4222");
    assert.equal(settings.CONTROL_PLANE_URL, "127.0.0.1:50051");
    assert.equal(settings.LOG_LEVEL, "info");
    assert.equal(settings.HOST, "0.0.0.0");
    assert.equal(settings.PORT, 8080);
    assert.equal(settings.GRPC_PORT, 50051);
    assert.equal(settings.HEALTH_PORT, undefined);
    assert.equal(settings.MOCK_PORT, 9001);
    assert.equal(settings.INSTANCE_ID, undefined);
    assert.equal(settings.WORKER_CONCURRENCY, undefined);
    assert.equal(settings.SHUTDOWN_DELAY_MS, 0);
    assert.ok(Object.isFrozen(settings));
  });

  test("an empty variable counts as unset, never as 0", () => {
    const settings = loadSettings({ PORT: "", HEALTH_PORT: "", SHUTDOWN_DELAY_MS: "" });
    assert.equal(settings.PORT, 8080);
    assert.equal(settings.HEALTH_PORT, undefined);
    assert.equal(settings.SHUTDOWN_DELAY_MS, 0);
  });

  test("string values are coerced to numbers", () => {
    const settings = loadSettings({ PORT: "3000", HEALTH_PORT: "9090", WORKER_CONCURRENCY: "12", SHUTDOWN_DELAY_MS: "500", LOG_LEVEL: "debug" });
    assert.equal(settings.PORT, 3000);
    assert.equal(settings.HEALTH_PORT, 9090);
    assert.equal(settings.WORKER_CONCURRENCY, 12);
    assert.equal(settings.SHUTDOWN_DELAY_MS, 500);
    assert.equal(settings.LOG_LEVEL, "debug");
  });

  test("unrelated environment variables are ignored", () => {
    assert.equal(loadSettings({ PATH: "/usr/bin", HOME: "/root" }).PORT, 8080);
  });

  test("a bad PORT is a ConfigError naming PORT and its value", () => {
    assertConfigError(() => loadSettings({ PORT: "http" }), "PORT=http");
    assertConfigError(() => loadSettings({ PORT: "70000" }), "PORT=70000");
    assertConfigError(() => loadSettings({ PORT: "80.5" }), "PORT=80.5");
  });

  test("the trace backend's query URL and the trace link template", () => {
    const settings = loadSettings({ RUNNEL_TRACE_QUERY_URL: "http://127.0.0.1:16686", RUNNEL_TRACE_LINK: "https://jaeger.example/trace/{traceId}" });
    assert.equal(settings.RUNNEL_TRACE_QUERY_URL, "http://127.0.0.1:16686");
    assert.equal(settings.RUNNEL_TRACE_LINK, "https://jaeger.example/trace/{traceId}");
    assert.equal(loadSettings({}).RUNNEL_TRACE_QUERY_URL, undefined);
    assertConfigError(() => loadSettings({ RUNNEL_TRACE_QUERY_URL: "jaeger:16686" }), "RUNNEL_TRACE_QUERY_URL=jaeger:16686");
    assertConfigError(() => loadSettings({ RUNNEL_TRACE_LINK: "https://jaeger.example/trace/" }), "RUNNEL_TRACE_LINK=");
  });

  test("other bad values name their variable", () => {
    assertConfigError(() => loadSettings({ LOG_LEVEL: "loud" }), "LOG_LEVEL=loud");
    assertConfigError(() => loadSettings({ WORKER_CONCURRENCY: "0" }), "WORKER_CONCURRENCY=0");
    assertConfigError(() => loadSettings({ GRPC_PORT: "-1" }), "GRPC_PORT=-1");
  });
});
