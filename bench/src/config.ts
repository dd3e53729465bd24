/** The benchmark's sizes (full and quick) and the runnel.yaml it runs the stack with. */

/** How big each scenario is. */
export interface BenchSizes {
  readonly mode: "full" | "quick";
  /** The TTFT closed loops: clients, streams per client, tokens per stream (at 50 tokens/s). */
  readonly ttft: ReadonlyArray<{ readonly concurrency: number; readonly perClient: number; readonly tokens: number }>;
  /** Concurrent streams of the inter-token scenario, and their length in tokens (50 tokens/s). */
  readonly itlStreams: number;
  readonly itlTokens: number;
  /** Throughput: concurrent streams, tokens per stream, seconds. */
  readonly throughputConcurrency: number;
  readonly throughputTokens: number;
  readonly throughputSeconds: number;
  /** Idle connections wanted (capped by the open-file limit). */
  readonly idleStreams: number;
  readonly cancels: number;
  readonly failovers: number;
  readonly warmupStreams: number;
  /** Pause before and after opening idle connections, for RSS to settle. */
  readonly settleMs: number;
}

export const FULL: BenchSizes = {
  mode: "full",
  ttft: [
    { concurrency: 1, perClient: 200, tokens: 5 },
    { concurrency: 50, perClient: 12, tokens: 50 },
    { concurrency: 500, perClient: 3, tokens: 50 },
  ],
  itlStreams: 500,
  itlTokens: 250,
  throughputConcurrency: 64,
  throughputTokens: 2000,
  throughputSeconds: 15,
  idleStreams: 5000,
  cancels: 200,
  failovers: 200,
  warmupStreams: 300,
  settleMs: 3000,
};

export const QUICK: BenchSizes = {
  mode: "quick",
  ttft: [
    { concurrency: 1, perClient: 20, tokens: 5 },
    { concurrency: 50, perClient: 2, tokens: 25 },
    { concurrency: 500, perClient: 1, tokens: 25 },
  ],
  itlStreams: 100,
  itlTokens: 50,
  throughputConcurrency: 16,
  throughputTokens: 1000,
  throughputSeconds: 3,
  idleStreams: 300,
  cancels: 15,
  failovers: 15,
  warmupStreams: 50,
  settleMs: 1000,
};

/** The mock's URL in runnel.yaml: the config's own `${VAR}` expansion fills the port the stack chose. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: runnel.yaml's ${VAR} syntax, not a JavaScript template
const MOCK_BASE_URL = "http://127.0.0.1:${MOCK_PORT}/v1";

/** Upstream (mock scenario) model strings. */
export function upstreamModels(sizes: BenchSizes) {
  return {
    ttft: (tokens: number) => `mock?tokens=${tokens}&itl=20`,
    itl: `mock?tokens=${sizes.itlTokens}&itl=20`,
    throughput: `mock?tokens=${sizes.throughputTokens}`,
    idle: "mock?ttft=1200000&tokens=1",
    cancel: "mock?tokens=100000&itl=10",
    base: "mock?tokens=5",
    failover: (key: string) => `mock?fail=500-once&key=${key}&tokens=5`,
    failoverPrimary: (key: string) => `mock?fail=500&key=${key}&tokens=5`,
  };
}

/**
 * The runnel.yaml of the run: one public model per scenario (the public name
 * is the scenario's name, the route carries the mock scenario), and one
 * `failover-<i>` model per failover sample: a primary route that answers 500
 * (its own key, so its own circuit) and a backup route of the next priority.
 */
export function benchConfigYaml(sizes: BenchSizes, nonce: string): string {
  const models = upstreamModels(sizes);
  const lines = [
    "# Written by `npm run bench` for one run; see docs/benchmarks.md.",
    "providers:",
    "  - name: mock",
    "    type: mock",
    `    baseUrl: ${MOCK_BASE_URL}`,
    "    timeouts: { connect: 5s, firstToken: 60s, idle: 60s }",
    "    retries: { maxAttempts: 1 }",
    "    maxConnections: 8192",
    "  - name: mock-retry",
    "    type: mock",
    `    baseUrl: ${MOCK_BASE_URL}`,
    "    timeouts: { connect: 5s, firstToken: 60s, idle: 60s }",
    "    retries: { maxAttempts: 2, baseDelay: 0ms, maxDelay: 0ms }",
    "  - name: mock-patient",
    "    type: mock",
    `    baseUrl: ${MOCK_BASE_URL}`,
    "    timeouts: { connect: 5s, firstToken: 30m, idle: 30m }",
    "    maxConnections: 8192",
    "models:",
    ...[...new Set(sizes.ttft.map((t) => t.tokens))].map(
      (tokens) => `  - { name: ttft-${tokens}, routes: [{ provider: mock, model: "${models.ttft(tokens)}" }] }`,
    ),
    `  - { name: itl, routes: [{ provider: mock, model: "${models.itl}" }] }`,
    `  - { name: throughput, routes: [{ provider: mock, model: "${models.throughput}" }] }`,
    `  - { name: idle, routes: [{ provider: mock-patient, model: "${models.idle}" }] }`,
    `  - { name: cancel, routes: [{ provider: mock, model: "${models.cancel}" }] }`,
    `  - { name: base, routes: [{ provider: mock-retry, model: "${models.base}" }] }`,
  ];
  for (let index = 0; index < sizes.failovers; index++) {
    // The primary always answers 500 (its own key, so its own circuit: every sample fails over rather than skipping an open circuit).
    lines.push(
      `  - { name: failover-${index}, routes: [{ provider: mock, model: "${models.failoverPrimary(`${nonce}-r${index}`)}" }, { provider: mock, model: "${models.base}", priority: 1 }] }`,
    );
  }
  lines.push(
    "worker:",
    "  concurrency: 8192",
    "ingress:",
    "  # A client that leaves is cancelled at once (no resume window), so the",
    "  # idle-memory scenario's connections are gone when it closes them.",
    "  detachGrace: 0",
    "",
  );
  return lines.join("\n");
}
