import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  buildSnapshot,
  type ChatRequest,
  CircuitState,
  createLogger,
  type ErrorCode,
  type EventBody,
  type Failover,
  FailoverMode,
  FinishReason,
  HealthBook,
  healthSettings,
  type Job,
  OutcomeKind,
  parseConfig,
  type Route,
  RoutingTable,
  RunnelError,
  type Usage,
} from "@runnel/shared";
import { ProviderError } from "./providers/http.js";
import { type RetryPolicy, withRetries } from "./providers/retry.js";
import type { EventBatch, ProviderAdapter, StreamCall } from "./providers/types.js";
import { type OutcomeReport, type ResumePoint, RouteRunner, type RunResult } from "./route-runner.js";
import type { AttemptInfo, StreamObserver } from "./stream-observer.js";

const BOUNDED = { timeout: 5_000 };
const T0 = 1_700_000_000_000;
const LOG = createLogger("route-runner-test", "silent");

const PRIMARY: Route = { provider: "primary", model: "p-1" };
const BACKUP: Route = { provider: "backup", model: "b-1" };
const THIRD: Route = { provider: "third", model: "t-1" };

const PROVIDERS = [
  { name: "primary", type: "mock", baseUrl: "http://primary.test/v1", circuit: { failureThreshold: 2, probeInterval: "10s" } },
  { name: "backup", type: "mock", baseUrl: "http://backup.test/v1" },
  { name: "third", type: "mock", baseUrl: "http://third.test/v1" },
];

const ROUTES = [
  { ...PRIMARY, priority: 0 },
  { ...BACKUP, priority: 1 },
  { ...THIRD, priority: 2 },
];

const REQUEST: ChatRequest = {
  messages: [{ role: "user", content: [{ part: { $case: "text", value: "Say hello." } }], name: "", toolCallId: "", toolCalls: [] }],
  stop: [],
  tools: [],
  toolChoiceJson: "",
  includeUsage: true,
  user: "",
};

// What the client should see, built once here so the expectations read like the stream.
const started = (route: Route): EventBody => ({ $case: "started", value: { provider: route.provider, model: route.model, attempt: 1 } });
const text = (value: string): EventBody => ({ $case: "textDelta", value: { text: value } });
const usage = (value: Usage): EventBody => ({ $case: "usage", value });
const done = (): EventBody => ({ $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } });
const failover = (mode: FailoverMode, from: Route, to: Route, reasonCode: string, reason: string): EventBody => ({
  $case: "failover",
  value: { mode, from, to, reasonCode, reason, takeover: false },
});

/** The message a fake provider fails with, so failover reasons can be expected exactly. */
const failureMessage = (code: string, provider: string) => `${code} from ${provider}`;

/** What a fake route does on one call. */
interface Behaviour {
  /** Text deltas, in order. */
  readonly tokens?: readonly string[];
  /** Events other than text sent before the text (reasoning, tool calls). */
  readonly before?: readonly EventBody[];
  /** Wait this long (after `started`) before the first token, honouring the call's signal. */
  readonly firstTokenDelayMs?: number;
  /** Fail after `after` tokens (default 0: before the first). With a status and no token, it fails as an HTTP answer, before `started`. */
  readonly fail?: { readonly code: ErrorCode; readonly after?: number; readonly status?: number; readonly retryAfterMs?: number; readonly retry?: boolean };
  /** Wait this long between two tokens (a long generation), honouring the call's signal. */
  readonly tokenIntervalMs?: number;
  /** After the tokens, stall until the signal is aborted. */
  readonly hang?: boolean;
  readonly usage?: Usage;
}

type Script = Behaviour | ((call: StreamCall, index: number) => Behaviour);

/** In-process providers: each named provider follows its script; every call is recorded. */
class FakeProviders implements ProviderAdapter {
  readonly calls: StreamCall[] = [];
  /** Each call's promise, settled or not, to wait for stragglers (aborted hedges). */
  readonly running: Promise<void>[] = [];
  /** Things a script wants to note during a call. */
  readonly notes: string[] = [];
  /** At each failure before a first token, what the call's canFailOver said (undefined: the call had none). */
  readonly couldFailOver: Array<[provider: string, answer: boolean | undefined]> = [];

  constructor(readonly scripts: Record<string, Script>) {}

  callsTo(provider: string): StreamCall[] {
    return this.calls.filter((call) => call.provider.name === provider);
  }

  stream(call: StreamCall): AsyncIterable<EventBatch> {
    const index = this.callsTo(call.provider.name).length;
    this.calls.push(call);
    let ended: () => void = () => {};
    this.running.push(new Promise<void>((resolve) => (ended = resolve)));
    const play = this.#play(call, index);
    return (async function* () {
      try {
        yield* play;
      } finally {
        ended();
      }
    })();
  }

  async *#play(call: StreamCall, index: number): AsyncGenerator<EventBatch, void, undefined> {
    const script = this.scripts[call.provider.name];
    if (!script) throw new Error(`no script for ${call.provider.name}`);
    const behaviour = typeof script === "function" ? script(call, index) : script;
    const { fail } = behaviour;
    let sentAny = false;
    const failure = () => {
      // What a retry layer around this adapter would ask at this moment.
      if (!sentAny) this.couldFailOver.push([call.provider.name, call.canFailOver?.()]);
      return (
        fail &&
        new ProviderError(fail.code, failureMessage(fail.code, call.provider.name), {
          retry: fail.retry ?? false,
          ...(fail.retryAfterMs === undefined ? {} : { retryAfterMs: fail.retryAfterMs }),
          ...(fail.status === undefined ? {} : { status: fail.status }),
        })
      );
    };
    call.signal.throwIfAborted();
    if (fail && fail.status !== undefined && (fail.after ?? 0) === 0) throw failure();
    yield [{ $case: "started", value: { provider: call.provider.name, model: call.model, attempt: 1 } }];
    if (behaviour.firstTokenDelayMs) await sleep(behaviour.firstTokenDelayMs, undefined, { signal: call.signal });
    for (const body of behaviour.before ?? []) yield [body];
    const tokens = behaviour.tokens ?? [];
    for (let sent = 0; sent < tokens.length; sent++) {
      if (fail && (fail.after ?? 0) === sent) throw failure();
      yield [{ $case: "textDelta", value: { text: tokens[sent] ?? "" } }];
      sentAny = true;
      // One macrotask between tokens, as a network read would be: the runner sees tokens arrive over time.
      if (behaviour.tokenIntervalMs) await sleep(behaviour.tokenIntervalMs, undefined, { signal: call.signal });
      else await new Promise((resolve) => setImmediate(resolve));
      call.signal.throwIfAborted();
    }
    if (fail) throw failure();
    if (behaviour.hang) {
      await new Promise<never>((_resolve, reject) => {
        if (call.signal.aborted) reject(call.signal.reason);
        call.signal.addEventListener("abort", () => reject(call.signal.reason), { once: true });
      });
    }
    if (behaviour.usage) yield [{ $case: "usage", value: behaviour.usage }];
    yield [{ $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } }];
  }
}

/** An observer that writes down what it is told, in order. */
class RecordingObserver implements StreamObserver {
  readonly seen: string[] = [];
  readonly attempts: AttemptInfo[] = [];
  readonly failovers: Failover[] = [];

  attemptStarted(attempt: AttemptInfo): undefined {
    this.attempts.push(attempt);
    this.seen.push(`start ${attempt.route.provider}#${attempt.index}${attempt.hedge ? " hedge" : ""}${attempt.prefill ? " prefill" : ""}`);
    return undefined;
  }
  firstToken(attempt: AttemptInfo, ttftMs: number): void {
    assert.ok(Number.isFinite(ttftMs) && ttftMs >= 0, `ttft ${ttftMs}`);
    this.seen.push(`first ${attempt.route.provider}`);
  }
  attemptEnded(attempt: AttemptInfo, errorCode: string | undefined): void {
    this.seen.push(`end ${attempt.route.provider} ${errorCode}`);
  }
  retry(): void {
    this.seen.push("retry");
  }
  failover(event: Failover): void {
    this.failovers.push(event);
    this.seen.push(`failover ${FailoverMode[event.mode]}`);
  }
  cancelled(reason: string): void {
    this.seen.push(`cancelled ${reason}`);
  }
  ended(): void {
    this.seen.push("ended");
  }
}

/** A report as a short line: kind, provider, and the error code or retry delay when there is one. */
function line(report: OutcomeReport): string {
  const kind = OutcomeKind[report.kind].replace("OUTCOME_KIND_", "");
  const extra = [
    report.errorCode,
    report.retryAfterMs === undefined ? undefined : `retry=${report.retryAfterMs}`,
    report.tokens === undefined ? undefined : `tokens=${report.tokens}`,
  ];
  return [kind, report.route.provider, ...extra.filter((part) => part !== undefined)].join(" ");
}

interface RunOptions {
  readonly signal?: AbortSignal;
  readonly resume?: ResumePoint;
  readonly affinityKey?: string;
  readonly model?: string;
  readonly routes?: Route[];
  /** Called with each event as it is emitted. */
  readonly onEmit?: (body: EventBody) => void;
}

interface Outcome {
  readonly events: EventBody[];
  readonly result?: RunResult;
  readonly error?: RunnelError;
}

/** One worker's view: a routing table from a config, a health book on a fake clock, fake providers and recorders. */
function harness(
  scripts: Record<string, Script>,
  model: Record<string, unknown> = {},
  options: { providers?: readonly object[]; random?: () => number; wrap?: (adapter: ProviderAdapter) => ProviderAdapter } = {},
) {
  const yaml = JSON.stringify({ providers: options.providers ?? PROVIDERS, models: [{ name: "chat", routes: ROUTES, ...model }] });
  const table = new RoutingTable(buildSnapshot(parseConfig(yaml, {}), 1));
  const clock = { at: T0 };
  const health = new HealthBook(
    (provider) => healthSettings(table.provider(provider)),
    () => clock.at,
  );
  const providers = new FakeProviders(scripts);
  const adapter = options.wrap ? options.wrap(providers) : providers;
  const observer = new RecordingObserver();
  const reports: OutcomeReport[] = [];
  const inFlight = new Map<string, number>();
  // What the worker's app does with a report (services/worker/src/app.ts): count in-flight, stamp, apply.
  const report = (outcome: OutcomeReport) => {
    reports.push(outcome);
    const key = `${outcome.route.provider}/${outcome.route.model}`;
    let count = inFlight.get(key) ?? 0;
    if (outcome.kind === OutcomeKind.OUTCOME_KIND_STARTED) count += 1;
    else if (outcome.kind !== OutcomeKind.OUTCOME_KIND_FIRST_TOKEN) count = Math.max(0, count - 1);
    inFlight.set(key, count);
    health.apply({
      provider: outcome.route.provider,
      model: outcome.route.model,
      workerId: "w-test",
      kind: outcome.kind,
      ttftMs: outcome.ttftMs ?? 0,
      retryAfterMs: outcome.retryAfterMs ?? 0,
      tokens: outcome.tokens ?? 0,
      errorCode: outcome.errorCode ?? "",
      atMs: clock.at,
      workerInFlight: count,
    });
  };
  const adapterTypes: string[] = [];

  async function run(runOptions: RunOptions = {}): Promise<Outcome> {
    const events: EventBody[] = [];
    const job: Job = {
      streamId: "stream-1",
      model: runOptions.model ?? "chat",
      request: REQUEST,
      routes: runOptions.routes ?? [],
      createdAtMs: T0,
      routingVersion: 1,
      traceContext: {},
      keyId: "",
      affinityKey: runOptions.affinityKey ?? "",
      requestRef: "",
    };
    const runner = new RouteRunner(
      {
        table,
        health,
        adapterFor: (type) => {
          adapterTypes.push(type);
          return adapter;
        },
        report,
        observer,
        log: LOG,
        random: options.random ?? (() => 0.5),
      },
      {
        job,
        signal: runOptions.signal ?? new AbortController().signal,
        ...(runOptions.resume ? { resume: runOptions.resume } : {}),
      },
    );
    try {
      // Pulled as the worker's publishing loop pulls it, event by event.
      for await (const batch of runner.events()) {
        for (const body of batch) {
          events.push(body);
          runOptions.onEmit?.(body);
        }
      }
      return { events, result: runner.result };
    } catch (error) {
      assert.ok(error instanceof RunnelError, `run() must throw a RunnelError, got ${String(error)}`);
      return { events, error };
    }
  }

  return { table, health, clock, providers, observer, reports, inFlight, adapterTypes, run, lines: () => reports.map(line) };
}

function assertServed(outcome: Outcome, route: Route): void {
  assert.equal(outcome.error, undefined, `expected success, got ${outcome.error?.code}: ${outcome.error?.message}`);
  assert.deepEqual(outcome.result?.served, route);
}

describe("RouteRunner", BOUNDED, () => {
  describe("the first route answers", () => {
    test("its events reach emit in order, `started` once, no failover; the result names the route and its usage", async () => {
      const tokens: Usage = { inputTokens: 4, outputTokens: 2, cachedInputTokens: 0, reasoningTokens: 0 };
      const h = harness({ primary: { tokens: ["Hel", "lo"], usage: tokens } });
      const outcome = await h.run();
      assertServed(outcome, PRIMARY);
      assert.deepEqual(outcome.result?.usage, tokens);
      assert.deepEqual(outcome.events, [started(PRIMARY), text("Hel"), text("lo"), usage(tokens), done()]);
      assert.equal(h.providers.calls.length, 1);
      const [call] = h.providers.calls;
      assert.equal(call?.model, "p-1");
      assert.equal(call?.provider.name, "primary");
      assert.deepEqual(call?.request, REQUEST);
      assert.equal(call?.signal.aborted, false);
      assert.deepEqual(h.adapterTypes, ["mock"]);
      assert.deepEqual(h.lines(), ["STARTED primary", "FIRST_TOKEN primary", "SUCCEEDED primary tokens=6"]);
      const ttft = h.reports[1]?.ttftMs;
      assert.ok(typeof ttft === "number" && ttft >= 0, `FIRST_TOKEN carries ttftMs: ${ttft}`);
      assert.deepEqual(h.observer.seen, ["start primary#1", "first primary"]);
      assert.equal(h.inFlight.get("primary/p-1"), 0);
    });

    test("a model this worker's snapshot does not know runs on the job's routes", async () => {
      const h = harness({ backup: { tokens: ["ok"] } });
      const outcome = await h.run({ model: "unknown-to-worker", routes: [BACKUP] });
      assertServed(outcome, BACKUP);
      assert.deepEqual(outcome.events, [started(BACKUP), text("ok"), done()]);
    });
  });

  describe("failover before the first token", () => {
    const cases: Array<{ name: string; code: ErrorCode; status?: number; kind: string }> = [
      { name: "500", code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", status: 500, kind: "FAILED" },
      { name: "503", code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", status: 503, kind: "FAILED" },
      { name: "429", code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", status: 429, kind: "RATE_LIMITED" },
      { name: "first-token timeout", code: "RUNNEL_ERR_PROVIDER_TIMEOUT", kind: "FAILED" },
      { name: "connection reset", code: "RUNNEL_ERR_PROVIDER_STREAM_CUT", kind: "FAILED" },
    ];
    for (const { name, code, status, kind } of cases) {
      test(`${name}: a next_route failover, then only the backup's events`, async () => {
        const h = harness({ primary: { fail: { code, ...(status === undefined ? {} : { status }) } }, backup: { tokens: ["fine"] } });
        const outcome = await h.run();
        assertServed(outcome, BACKUP);
        assert.deepEqual(outcome.events, [
          failover(FailoverMode.FAILOVER_MODE_NEXT_ROUTE, PRIMARY, BACKUP, code, failureMessage(code, "primary")),
          started(BACKUP),
          text("fine"),
          done(),
        ]);
        assert.deepEqual(h.lines(), ["STARTED primary", `${kind} primary ${code}`, "STARTED backup", "FIRST_TOKEN backup", "SUCCEEDED backup"]);
        assert.deepEqual(h.observer.seen, ["start primary#1", `end primary ${code}`, "start backup#2", "first backup", "failover FAILOVER_MODE_NEXT_ROUTE"]);
        assert.equal(h.providers.callsTo("third").length, 0);
      });
    }

    test("two failures still make one failover event, from the first route to the one that answered", async () => {
      const h = harness({
        primary: { fail: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", status: 503 } },
        backup: { fail: { code: "RUNNEL_ERR_PROVIDER_TIMEOUT" } },
        third: { tokens: ["third time lucky"] },
      });
      const outcome = await h.run();
      assertServed(outcome, THIRD);
      assert.deepEqual(outcome.events, [
        failover(FailoverMode.FAILOVER_MODE_NEXT_ROUTE, PRIMARY, THIRD, "RUNNEL_ERR_PROVIDER_TIMEOUT", failureMessage("RUNNEL_ERR_PROVIDER_TIMEOUT", "backup")),
        started(THIRD),
        text("third time lucky"),
        done(),
      ]);
    });

    test("a 429 puts the route in cooldown: the next run skips it without calling it, until Retry-After has passed", async () => {
      const h = harness({
        primary: (_call, index) =>
          index === 0 ? { fail: { code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", status: 429, retryAfterMs: 5_000 } } : { tokens: ["back"] },
        backup: { tokens: ["spare"] },
      });
      await h.run();
      assert.deepEqual(h.lines().slice(0, 2), ["STARTED primary", "RATE_LIMITED primary RUNNEL_ERR_PROVIDER_RATE_LIMITED retry=5000"]);
      h.clock.at += 4_999;
      const second = await h.run();
      assertServed(second, BACKUP);
      assert.deepEqual(second.events, [started(BACKUP), text("spare"), done()], "a skipped route is not a failover");
      assert.equal(h.providers.callsTo("primary").length, 1);
      h.clock.at += 1;
      const third = await h.run();
      assertServed(third, PRIMARY);
      assert.equal(h.providers.callsTo("primary").length, 2);
    });

    test("when every route is cooling down or over budget, the error is RATE_LIMITED", async () => {
      const h = harness(
        {
          primary: { fail: { code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", status: 429, retryAfterMs: 60_000 } },
          backup: { tokens: ["once"] },
        },
        { routes: [ROUTES[0], ROUTES[1]] },
        { providers: [PROVIDERS[0], { ...PROVIDERS[1], limits: { requestsPerMinute: 1 } }] },
      );
      assertServed(await h.run(), BACKUP);
      const calls = h.providers.calls.length;
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
      assert.match(outcome.error?.message ?? "", /cooldown/);
      assert.match(outcome.error?.message ?? "", /requests-budget/);
      assert.deepEqual(outcome.events, []);
      assert.equal(h.providers.calls.length, calls, "no provider was called");
    });

    test("a content-policy refusal is thrown as it is, without trying the next route", async () => {
      const h = harness({ primary: { fail: { code: "RUNNEL_ERR_CONTENT_POLICY", status: 400 } }, backup: { tokens: ["x"] } });
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_CONTENT_POLICY");
      assert.ok(outcome.error instanceof ProviderError, "the provider's own error");
      assert.deepEqual(outcome.events, []);
      assert.equal(h.providers.callsTo("backup").length, 0);
      assert.deepEqual(h.lines(), ["STARTED primary", "RELEASED primary RUNNEL_ERR_CONTENT_POLICY"]);
    });

    test("with failover.onContentPolicy a content-policy refusal fails over", async () => {
      const h = harness(
        { primary: { fail: { code: "RUNNEL_ERR_CONTENT_POLICY", status: 400 } }, backup: { tokens: ["x"] } },
        { failover: { onContentPolicy: true } },
      );
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.deepEqual(
        outcome.events[0],
        failover(FailoverMode.FAILOVER_MODE_NEXT_ROUTE, PRIMARY, BACKUP, "RUNNEL_ERR_CONTENT_POLICY", failureMessage("RUNNEL_ERR_CONTENT_POLICY", "primary")),
      );
    });

    test("a plain bad request is the client's fault: thrown without trying the next route, no verdict on the route", async () => {
      const h = harness({ primary: { fail: { code: "RUNNEL_ERR_PROVIDER_BAD_REQUEST", status: 400 } }, backup: { tokens: ["x"] } });
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_PROVIDER_BAD_REQUEST");
      assert.equal(h.providers.callsTo("backup").length, 0);
      assert.deepEqual(h.lines(), ["STARTED primary", "RELEASED primary RUNNEL_ERR_PROVIDER_BAD_REQUEST"]);
    });

    test("a context-length error goes only to a route with a larger context window", async () => {
      const routes = [
        { ...ROUTES[0], contextWindow: 8_000 },
        { ...ROUTES[1], contextWindow: 8_000 },
        { ...ROUTES[2], contextWindow: 32_000 },
      ];
      const h = harness(
        { primary: { fail: { code: "RUNNEL_ERR_CONTEXT_LENGTH", status: 400 } }, backup: { tokens: ["too small"] }, third: { tokens: ["roomy"] } },
        { routes },
      );
      const outcome = await h.run();
      assertServed(outcome, THIRD);
      assert.equal(h.providers.callsTo("backup").length, 0);
      assert.deepEqual(outcome.events, [
        failover(FailoverMode.FAILOVER_MODE_NEXT_ROUTE, PRIMARY, THIRD, "RUNNEL_ERR_CONTEXT_LENGTH", failureMessage("RUNNEL_ERR_CONTEXT_LENGTH", "primary")),
        started(THIRD),
        text("roomy"),
        done(),
      ]);
    });

    test("a context-length error with no larger route left is thrown with its code", async () => {
      const routes = [{ ...ROUTES[0], contextWindow: 8_000 }, { ...ROUTES[1], contextWindow: 8_000 }, { ...ROUTES[2] }];
      const h = harness(
        { primary: { fail: { code: "RUNNEL_ERR_CONTEXT_LENGTH", status: 400 } }, backup: { tokens: ["x"] }, third: { tokens: ["x"] } },
        { routes },
      );
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_CONTEXT_LENGTH");
      assert.match(outcome.error?.message ?? "", /context window/);
      assert.equal(h.providers.calls.length, 1);
      assert.deepEqual(outcome.events, []);
    });

    test("at most maxRoutes routes are tried; the last failure is thrown", async () => {
      const fail = { fail: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE" as const, status: 503 } };
      const h = harness({ primary: fail, backup: fail, third: { tokens: ["never"] } }, { failover: { maxRoutes: 2 } });
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
      assert.match(outcome.error?.message ?? "", /from backup.*limit of 2 routes/);
      assert.deepEqual(
        h.providers.calls.map((call) => call.provider.name),
        ["primary", "backup"],
      );
      assert.deepEqual(outcome.events, []);
    });

    test("no route is started once the failover budget is spent", async () => {
      const h = harness(
        { primary: { firstTokenDelayMs: 40, fail: { code: "RUNNEL_ERR_PROVIDER_TIMEOUT" } }, backup: { tokens: ["late"] } },
        { failover: { budget: "20ms" } },
      );
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
      assert.match(outcome.error?.message ?? "", /failover budget of 20 ms/);
      assert.equal(h.providers.callsTo("backup").length, 0);
    });
  });

  describe("retries on the same route (failover.sameRouteRetries)", () => {
    const UNAVAILABLE = { fail: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE" as const, status: 503 } };
    /** The adapters as the worker builds them: each call goes through the route's retries (services/worker/src/providers/index.ts). */
    const withRouteRetries = (policy: Partial<RetryPolicy> = {}) => ({
      wrap: (adapter: ProviderAdapter) =>
        withRetries(adapter, { policy: () => ({ maxAttempts: 3, budgetMs: 10_000, baseDelayMs: 20, maxDelayMs: 100, ...policy }), random: () => 0.5 }),
    });

    test("last-resort (the default): a failing route is told another can take the request while one can start, and not on the last", async () => {
      const h = harness({ primary: UNAVAILABLE, backup: UNAVAILABLE, third: UNAVAILABLE });
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
      assert.deepEqual(h.providers.couldFailOver, [
        ["primary", true],
        ["backup", true],
        ["third", false],
      ]);
    });

    test("a route in cooldown, behind an open circuit or past maxRoutes is no other route to go to", async () => {
      const cooling = harness({ primary: UNAVAILABLE, backup: { tokens: ["x"] } }, { routes: [ROUTES[0], ROUTES[1]] });
      cooling.health.apply({
        ...{ provider: BACKUP.provider, model: BACKUP.model, workerId: "w-other", ttftMs: 0, tokens: 0, atMs: T0, workerInFlight: 0 },
        kind: OutcomeKind.OUTCOME_KIND_RATE_LIMITED,
        retryAfterMs: 60_000,
        errorCode: "RUNNEL_ERR_PROVIDER_RATE_LIMITED",
      });
      assert.equal((await cooling.run()).error?.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
      assert.deepEqual(cooling.providers.couldFailOver, [["primary", false]]);

      const open = harness({ primary: UNAVAILABLE, backup: UNAVAILABLE }, { routes: [ROUTES[1], ROUTES[0]] });
      // The primary's circuit opens after 2 failures (failureThreshold 2); the backup tries it while it is closed.
      await open.run();
      await open.run();
      assert.equal(open.health.circuit(PRIMARY), CircuitState.CIRCUIT_STATE_OPEN);
      open.providers.couldFailOver.length = 0;
      await open.run();
      assert.deepEqual(open.providers.couldFailOver, [["backup", false]]);

      const limited = harness({ primary: UNAVAILABLE, backup: { tokens: ["x"] } }, { failover: { maxRoutes: 1 } });
      await limited.run();
      assert.deepEqual(limited.providers.couldFailOver, [["primary", false]]);
    });

    test("past the failover budget there is no other route to go to", async () => {
      const h = harness(
        { primary: { firstTokenDelayMs: 40, fail: { code: "RUNNEL_ERR_PROVIDER_TIMEOUT" } }, backup: { tokens: ["late"] } },
        { failover: { budget: "20ms" } },
      );
      await h.run();
      assert.deepEqual(h.providers.couldFailOver, [["primary", false]]);
    });

    test("a hedge still running is another route: the hedged route that fails is not retried", async () => {
      const h = harness(
        { primary: { firstTokenDelayMs: 60, fail: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE" } }, backup: { firstTokenDelayMs: 120, tokens: ["hedged"] } },
        { hedgeAfter: "10ms", routes: [ROUTES[0], ROUTES[1]] },
      );
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.ok(h.observer.seen.includes("start backup#2 hedge"), h.observer.seen.join(", "));
      assert.deepEqual(h.providers.couldFailOver, [["primary", true]], "no route left to start, but the hedge runs");
    });

    test("always: no call is told of other routes, so the route's retries always come first", async () => {
      const h = harness({ primary: UNAVAILABLE, backup: { tokens: ["x"] } }, { failover: { sameRouteRetries: "always" } });
      assertServed(await h.run(), BACKUP);
      assert.deepEqual(h.providers.couldFailOver, [["primary", undefined]]);
    });

    test("through the route's retries: a 429 with Retry-After 1 s goes to the backup at once, once, and the primary cools down", async () => {
      const h = harness(
        { primary: { fail: { code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", status: 429, retryAfterMs: 1_000, retry: true } }, backup: { tokens: ["spare"] } },
        {},
        withRouteRetries(),
      );
      const startedAt = performance.now();
      const outcome = await h.run();
      const elapsed = performance.now() - startedAt;
      assertServed(outcome, BACKUP);
      assert.equal(h.providers.callsTo("primary").length, 1, "no retry on the rate-limited route");
      assert.ok(elapsed < 500, `served after ${elapsed.toFixed(0)} ms: the Retry-After was not waited for`);
      assert.deepEqual(h.lines().slice(0, 2), ["STARTED primary", "RATE_LIMITED primary RUNNEL_ERR_PROVIDER_RATE_LIMITED retry=1000"]);
      assert.equal(h.health.admission(PRIMARY).ok, false, "in cooldown");
    });

    test("through the route's retries: a 500 goes to the backup without a backoff", async () => {
      const h = harness(
        { primary: { fail: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", status: 500, retry: true } }, backup: { tokens: ["spare"] } },
        {},
        withRouteRetries({ baseDelayMs: 1_000, maxDelayMs: 1_000 }),
      );
      const startedAt = performance.now();
      assertServed(await h.run(), BACKUP);
      assert.equal(h.providers.callsTo("primary").length, 1);
      assert.ok(performance.now() - startedAt < 400, "no backoff of 500 ms or more");
    });

    test("through the route's retries: the last route that can serve keeps its retries", async () => {
      const h = harness(
        {
          primary: (_call, index) =>
            index === 0 ? { fail: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", status: 500, retry: true } } : { tokens: ["second try"] },
        },
        { routes: [ROUTES[0]] },
        withRouteRetries(),
      );
      const outcome = await h.run();
      assertServed(outcome, PRIMARY);
      assert.equal(h.providers.callsTo("primary").length, 2);
      assert.deepEqual(outcome.events, [{ ...started(PRIMARY), value: { ...PRIMARY, attempt: 2 } }, text("second try"), done()]);
    });

    test("through the route's retries, with always: the primary's attempts first (with their waits), then the backup", async () => {
      const h = harness(
        { primary: { fail: { code: "RUNNEL_ERR_PROVIDER_RATE_LIMITED", status: 429, retryAfterMs: 30, retry: true } }, backup: { tokens: ["spare"] } },
        { failover: { sameRouteRetries: "always" } },
        withRouteRetries(),
      );
      const startedAt = performance.now();
      assertServed(await h.run(), BACKUP);
      assert.equal(h.providers.callsTo("primary").length, 3, "maxAttempts on the primary");
      assert.ok(performance.now() - startedAt >= 55, "two Retry-After waits of 30 ms");
    });
  });

  describe("circuit breaker", () => {
    const UNAVAILABLE = { fail: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE" as const, status: 503 } };

    test("opens after failureThreshold failures; later runs skip the route until the probe interval, then one probe closes it", async () => {
      const h = harness({
        primary: (_call, index) => {
          h.providers.notes.push(`primary call ${index}: ${CircuitState[h.health.circuit(PRIMARY)]}`);
          return index < 2 ? UNAVAILABLE : { tokens: ["healed"] };
        },
        backup: { tokens: ["spare"] },
      });
      await h.run();
      assert.equal(h.health.circuit(PRIMARY), CircuitState.CIRCUIT_STATE_CLOSED, "one failure of two");
      await h.run();
      assert.equal(h.health.circuit(PRIMARY), CircuitState.CIRCUIT_STATE_OPEN);
      const skipped = await h.run();
      assertServed(skipped, BACKUP);
      assert.deepEqual(skipped.events, [started(BACKUP), text("spare"), done()]);
      h.clock.at += 9_999;
      assertServed(await h.run(), BACKUP);
      assert.equal(h.providers.callsTo("primary").length, 2);
      h.clock.at += 1;
      const probe = await h.run();
      assertServed(probe, PRIMARY);
      assert.deepEqual(probe.events, [started(PRIMARY), text("healed"), done()]);
      assert.deepEqual(h.providers.notes, [
        "primary call 0: CIRCUIT_STATE_CLOSED",
        "primary call 1: CIRCUIT_STATE_CLOSED",
        "primary call 2: CIRCUIT_STATE_HALF_OPEN",
      ]);
      assert.equal(h.health.circuit(PRIMARY), CircuitState.CIRCUIT_STATE_CLOSED);
      assertServed(await h.run(), PRIMARY);
    });

    test("a failed probe re-opens the circuit for another interval", async () => {
      const h = harness({ primary: UNAVAILABLE, backup: { tokens: ["spare"] } });
      await h.run();
      await h.run();
      h.clock.at += 10_000;
      const probe = await h.run();
      assertServed(probe, BACKUP);
      assert.equal(h.providers.callsTo("primary").length, 3, "the probe went out");
      assert.equal(h.health.circuit(PRIMARY), CircuitState.CIRCUIT_STATE_OPEN);
      h.clock.at += 9_999;
      await h.run();
      assert.equal(h.providers.callsTo("primary").length, 3);
      h.clock.at += 1;
      await h.run();
      assert.equal(h.providers.callsTo("primary").length, 4);
    });

    test("when every circuit is open the error is NO_ROUTE, naming why each route was skipped", async () => {
      const h = harness({ primary: UNAVAILABLE }, { routes: [ROUTES[0]] });
      await h.run();
      await h.run();
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_NO_ROUTE");
      assert.match(outcome.error?.message ?? "", /primary\/p-1: circuit-open/);
      assert.equal(h.providers.calls.length, 2);
    });
  });

  describe("after the first token", () => {
    const CUT = { code: "RUNNEL_ERR_PROVIDER_STREAM_CUT" as const };
    const cutReason = failureMessage(CUT.code, "primary");
    const withPrefill = (partial: string): ChatRequest => ({
      ...REQUEST,
      messages: [...REQUEST.messages, { role: "assistant", content: [{ part: { $case: "text", value: partial } }], name: "", toolCallId: "", toolCalls: [] }],
    });
    const isPrefill = (call: StreamCall) => call.request.messages.at(-1)?.role === "assistant";

    test("policy error: the original error is thrown after the tokens already sent; no other route is tried", async () => {
      const h = harness({ primary: { tokens: ["Hel", "lo"], fail: { ...CUT, after: 1 } }, backup: { tokens: ["x"] } }, { afterFirstToken: "error" });
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
      assert.equal(outcome.error?.message, cutReason);
      assert.deepEqual(outcome.events, [started(PRIMARY), text("Hel")]);
      assert.equal(h.providers.callsTo("backup").length, 0);
      assert.deepEqual(h.lines(), ["STARTED primary", "FIRST_TOKEN primary", "FAILED primary RUNNEL_ERR_PROVIDER_STREAM_CUT"]);
    });

    test("policy restart: a restart failover, then the next route's whole answer without a second `started`", async () => {
      const h = harness(
        { primary: { tokens: ["Hel", "lo"], fail: { ...CUT, after: 1 } }, backup: { tokens: ["Hello", " world"] } },
        { afterFirstToken: "restart" },
      );
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.deepEqual(outcome.events, [
        started(PRIMARY),
        text("Hel"),
        failover(FailoverMode.FAILOVER_MODE_RESTART, PRIMARY, BACKUP, CUT.code, cutReason),
        text("Hello"),
        text(" world"),
        done(),
      ]);
      assert.deepEqual(h.providers.callsTo("backup")[0]?.request, REQUEST, "a restart sends the original request");
      assert.deepEqual(h.lines(), [
        "STARTED primary",
        "FIRST_TOKEN primary",
        "FAILED primary RUNNEL_ERR_PROVIDER_STREAM_CUT",
        "STARTED backup",
        "FIRST_TOKEN backup",
        "SUCCEEDED backup",
      ]);
    });

    test("policy continue: a route that accepts a prefill gets the partial text as a trailing assistant message", async () => {
      const routes = [ROUTES[0], { ...ROUTES[1], acceptsPrefill: true }, ROUTES[2]];
      const h = harness(
        { primary: { tokens: ["Hel", "lo", " there"], fail: { ...CUT, after: 2 } }, backup: { tokens: [" world"] } },
        { afterFirstToken: "continue", routes },
      );
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.deepEqual(h.providers.callsTo("backup")[0]?.request, withPrefill("Hello"));
      assert.deepEqual(outcome.events, [
        started(PRIMARY),
        text("Hel"),
        text("lo"),
        failover(FailoverMode.FAILOVER_MODE_CONTINUE, PRIMARY, BACKUP, CUT.code, cutReason),
        text(" world"),
        done(),
      ]);
      assert.deepEqual(h.observer.seen, [
        "start primary#1",
        "first primary",
        `end primary ${CUT.code}`,
        "start backup#2 prefill",
        "first backup",
        "failover FAILOVER_MODE_CONTINUE",
      ]);
    });

    test("policy continue: a second cut continues from everything sent so far", async () => {
      const routes = [ROUTES[0], { ...ROUTES[1], acceptsPrefill: true }, { ...ROUTES[2], acceptsPrefill: true }];
      const h = harness(
        { primary: { tokens: ["A", "B"], fail: { ...CUT, after: 1 } }, backup: { tokens: ["C", "D"], fail: { ...CUT, after: 1 } }, third: { tokens: ["E"] } },
        { afterFirstToken: "continue", routes },
      );
      const outcome = await h.run();
      assertServed(outcome, THIRD);
      assert.deepEqual(h.providers.callsTo("third")[0]?.request, withPrefill("AC"));
      assert.deepEqual(
        outcome.events.map((body) => (body.$case === "failover" ? `failover ${body.value.from?.provider}->${body.value.to?.provider}` : body.$case)),
        ["started", "textDelta", "failover primary->backup", "textDelta", "failover backup->third", "textDelta", "done"],
      );
    });

    test("policy continue after a restart continues only what was sent since the restart", async () => {
      const routes = [ROUTES[0], ROUTES[1], { ...ROUTES[2], acceptsPrefill: true }];
      const h = harness(
        {
          primary: { tokens: ["A", "B"], fail: { ...CUT, after: 1 } },
          backup: { tokens: ["X", "Y", "!"], fail: { ...CUT, after: 2 } },
          third: { tokens: ["Z"] },
        },
        { afterFirstToken: "continue", routes },
      );
      const outcome = await h.run();
      assertServed(outcome, THIRD);
      assert.deepEqual(h.providers.callsTo("third")[0]?.request, withPrefill("XY"));
      assert.deepEqual(outcome.events, [
        started(PRIMARY),
        text("A"),
        failover(FailoverMode.FAILOVER_MODE_RESTART, PRIMARY, BACKUP, CUT.code, cutReason),
        text("X"),
        text("Y"),
        failover(FailoverMode.FAILOVER_MODE_CONTINUE, BACKUP, THIRD, CUT.code, failureMessage(CUT.code, "backup")),
        text("Z"),
        done(),
      ]);
    });

    test("policy continue to a route without acceptsPrefill falls back to a restart", async () => {
      const h = harness({ primary: { tokens: ["Hel", "lo"], fail: { ...CUT, after: 1 } }, backup: { tokens: ["Hello"] } }, { afterFirstToken: "continue" });
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.deepEqual(h.providers.callsTo("backup")[0]?.request, REQUEST);
      assert.deepEqual(outcome.events, [
        started(PRIMARY),
        text("Hel"),
        failover(FailoverMode.FAILOVER_MODE_RESTART, PRIMARY, BACKUP, CUT.code, cutReason),
        text("Hello"),
        done(),
      ]);
    });

    test("policy continue after reasoning was streamed falls back to a restart (a prefill cannot reproduce it)", async () => {
      const routes = [ROUTES[0], { ...ROUTES[1], acceptsPrefill: true }, ROUTES[2]];
      const thinking: EventBody = { $case: "reasoningDelta", value: { text: "hmm" } };
      const h = harness(
        { primary: { before: [thinking], tokens: ["Hel", "lo"], fail: { ...CUT, after: 1 } }, backup: { tokens: ["Hello"] } },
        { afterFirstToken: "continue", routes },
      );
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.deepEqual(h.providers.callsTo("backup")[0]?.request, REQUEST);
      assert.deepEqual(outcome.events, [
        started(PRIMARY),
        thinking,
        text("Hel"),
        failover(FailoverMode.FAILOVER_MODE_RESTART, PRIMARY, BACKUP, CUT.code, cutReason),
        text("Hello"),
        done(),
      ]);
    });

    test("a route that rejects the prefill is retried there without it, as a restart, and that retry does not count against maxRoutes", async () => {
      const routes = [ROUTES[0], { ...ROUTES[1], acceptsPrefill: true }, ROUTES[2]];
      const h = harness(
        {
          primary: { tokens: ["Hel", "lo", "!"], fail: { ...CUT, after: 2 } },
          backup: (call) => (isPrefill(call) ? { fail: { code: "RUNNEL_ERR_PROVIDER_BAD_REQUEST", status: 400 } } : { tokens: ["Hello world"] }),
        },
        { afterFirstToken: "continue", routes, failover: { maxRoutes: 2 } },
      );
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.deepEqual(
        h.providers.callsTo("backup").map((call) => call.request),
        [withPrefill("Hello"), REQUEST],
      );
      assert.deepEqual(outcome.events, [
        started(PRIMARY),
        text("Hel"),
        text("lo"),
        failover(FailoverMode.FAILOVER_MODE_RESTART, PRIMARY, BACKUP, CUT.code, cutReason),
        text("Hello world"),
        done(),
      ]);
      assert.deepEqual(h.lines(), [
        "STARTED primary",
        "FIRST_TOKEN primary",
        "FAILED primary RUNNEL_ERR_PROVIDER_STREAM_CUT",
        "STARTED backup",
        "RELEASED backup RUNNEL_ERR_PROVIDER_BAD_REQUEST",
        "STARTED backup",
        "FIRST_TOKEN backup",
        "SUCCEEDED backup",
      ]);
    });

    test("when every route after the cut fails too, the thrown error carries the original failure's code", async () => {
      const routes = [ROUTES[0], { ...ROUTES[1], acceptsPrefill: true }, ROUTES[2]];
      const h = harness(
        {
          primary: { tokens: ["Hel", "lo"], fail: { ...CUT, after: 2 } },
          backup: (call) =>
            isPrefill(call)
              ? { fail: { code: "RUNNEL_ERR_PROVIDER_BAD_REQUEST", status: 400 } }
              : { fail: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", status: 503 } },
          third: { fail: { code: "RUNNEL_ERR_PROVIDER_UNAVAILABLE", status: 503 } },
        },
        { afterFirstToken: "continue", routes },
      );
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
      assert.match(outcome.error?.message ?? "", /^RUNNEL_ERR_PROVIDER_STREAM_CUT from primary; failing over did not help: /);
      assert.equal((outcome.error?.cause as RunnelError | undefined)?.message, cutReason);
      assert.deepEqual(
        h.providers.calls.map((call) => `${call.provider.name}${isPrefill(call) ? " prefill" : ""}`),
        ["primary", "backup prefill", "backup", "third"],
      );
      assert.deepEqual(outcome.events, [started(PRIMARY), text("Hel"), text("lo")]);
    });

    test("the failover budget bounds the wait for a first token, not the generation: a stream cut after the budget is continued", async () => {
      const routes = [ROUTES[0], { ...ROUTES[1], acceptsPrefill: true }, ROUTES[2]];
      // Budget 200 ms; the primary streams for about 500 ms, then is cut.
      const tokens = Array.from({ length: 10 }, (_, index) => `t${index}`);
      const h = harness(
        { primary: { tokens, tokenIntervalMs: 50, fail: { ...CUT, after: 10 } }, backup: { tokens: [" rest"] } },
        { afterFirstToken: "continue", routes, failover: { budget: "200ms" } },
      );
      const startedAt = performance.now();
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.ok(performance.now() - startedAt >= 450, "the cut came after the budget");
      assert.deepEqual(h.providers.callsTo("backup")[0]?.request, withPrefill(tokens.join("")));
      assert.deepEqual(outcome.events.slice(-3), [failover(FailoverMode.FAILOVER_MODE_CONTINUE, PRIMARY, BACKUP, CUT.code, cutReason), text(" rest"), done()]);
    });

    test("the same with restart", async () => {
      const h = harness(
        { primary: { tokens: ["a", "b", "c", "d", "e"], tokenIntervalMs: 60, fail: { ...CUT, after: 5 } }, backup: { tokens: ["again"] } },
        { afterFirstToken: "restart", failover: { budget: "100ms" } },
      );
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.deepEqual(outcome.events.slice(-3), [failover(FailoverMode.FAILOVER_MODE_RESTART, PRIMARY, BACKUP, CUT.code, cutReason), text("again"), done()]);
    });

    test("after a cut the budget counts from the failure: a next route slow to fail is the last one started in that round", async () => {
      const h = harness(
        {
          primary: { tokens: ["a", "b", "c"], tokenIntervalMs: 60, fail: { ...CUT, after: 3 } },
          backup: { firstTokenDelayMs: 150, fail: { code: "RUNNEL_ERR_PROVIDER_TIMEOUT" } },
          third: { tokens: ["never"] },
        },
        { afterFirstToken: "restart", failover: { budget: "100ms" } },
      );
      const outcome = await h.run();
      assert.equal(outcome.error?.code, CUT.code, "the original failure");
      assert.match(outcome.error?.message ?? "", /failover budget of 100 ms/);
      assert.equal(h.providers.callsTo("backup").length, 1, "started at once after the cut, 180 ms in");
      assert.equal(h.providers.callsTo("third").length, 0, "the backup failed 150 ms after the cut: past the round's budget");
    });

    test("policy restart: a failure the next route cannot fix (a bad request) is thrown as it is", async () => {
      const h = harness(
        { primary: { tokens: ["Hel", "lo"], fail: { code: "RUNNEL_ERR_PROVIDER_BAD_REQUEST", after: 1 } }, backup: { tokens: ["x"] } },
        { afterFirstToken: "restart" },
      );
      const outcome = await h.run();
      assert.equal(outcome.error?.code, "RUNNEL_ERR_PROVIDER_BAD_REQUEST");
      assert.equal(h.providers.callsTo("backup").length, 0);
    });
  });

  describe("hedging", () => {
    test("the primary is slow: after hedgeAfter the backup starts too, wins, and the primary is aborted and released", async () => {
      const h = harness({ primary: { firstTokenDelayMs: 300, tokens: ["slow"] }, backup: { tokens: ["fast"] } }, { hedgeAfter: "50ms" });
      const outcome = await h.run();
      assertServed(outcome, BACKUP);
      assert.deepEqual(outcome.events, [
        failover(FailoverMode.FAILOVER_MODE_HEDGE, PRIMARY, BACKUP, "", "no first token within 50 ms"),
        started(BACKUP),
        text("fast"),
        done(),
      ]);
      const primaryCall = h.providers.callsTo("primary")[0];
      assert.ok(primaryCall);
      assert.equal(primaryCall.signal.aborted, true);
      assert.equal((primaryCall.signal.reason as RunnelError).code, "RUNNEL_ERR_CANCELLED");
      await Promise.all(h.providers.running);
      assert.deepEqual(h.lines(), ["STARTED primary", "STARTED backup", "FIRST_TOKEN backup", "RELEASED primary", "SUCCEEDED backup"]);
      assert.deepEqual(h.observer.seen, [
        "start primary#1",
        "start backup#2 hedge",
        "first backup",
        "end primary RUNNEL_ERR_CANCELLED",
        "failover FAILOVER_MODE_HEDGE",
      ]);
      assert.equal(h.inFlight.get("primary/p-1"), 0);
    });

    test("the primary answers before hedgeAfter: no hedge is started", async () => {
      const h = harness({ primary: { tokens: ["quick"] }, backup: { tokens: ["x"] } }, { hedgeAfter: "50ms" });
      const outcome = await h.run();
      assertServed(outcome, PRIMARY);
      await sleep(70);
      assert.equal(h.providers.callsTo("backup").length, 0);
      assert.deepEqual(outcome.events, [started(PRIMARY), text("quick"), done()]);
    });

    test("the hedge started but the primary still answers first: the hedge is released and nothing is announced", async () => {
      const h = harness({ primary: { firstTokenDelayMs: 60, tokens: ["first"] }, backup: { firstTokenDelayMs: 1_000, tokens: ["x"] } }, { hedgeAfter: "20ms" });
      const outcome = await h.run();
      assertServed(outcome, PRIMARY);
      assert.deepEqual(outcome.events, [started(PRIMARY), text("first"), done()]);
      assert.equal(h.providers.callsTo("backup")[0]?.signal.aborted, true);
      await Promise.all(h.providers.running);
      assert.deepEqual(h.lines(), ["STARTED primary", "STARTED backup", "FIRST_TOKEN primary", "RELEASED backup", "SUCCEEDED primary"]);
    });
  });

  describe("cancellation", () => {
    test("aborting the stream's signal before the first token aborts the attempt; run() rejects with CANCELLED and no route is tried next", async () => {
      const controller = new AbortController();
      const h = harness({ primary: { firstTokenDelayMs: 10_000, tokens: ["never"] }, backup: { tokens: ["x"] } });
      setTimeout(() => controller.abort(new RunnelError("RUNNEL_ERR_CANCELLED", "client went away")), 20);
      const outcome = await h.run({ signal: controller.signal });
      assert.equal(outcome.error?.code, "RUNNEL_ERR_CANCELLED");
      assert.equal(outcome.error?.message, "client went away");
      assert.equal(h.providers.callsTo("primary")[0]?.signal.aborted, true);
      assert.equal(h.providers.callsTo("backup").length, 0);
      assert.deepEqual(outcome.events, []);
      assert.deepEqual(h.lines(), ["STARTED primary", "RELEASED primary RUNNEL_ERR_CANCELLED"]);
    });

    test("an abort without a RunnelError reason still ends as CANCELLED", async () => {
      const controller = new AbortController();
      const h = harness({ primary: { firstTokenDelayMs: 10_000 } });
      setTimeout(() => controller.abort(), 10);
      const outcome = await h.run({ signal: controller.signal });
      assert.equal(outcome.error?.code, "RUNNEL_ERR_CANCELLED");
    });

    test("a stream aborted with a failover-worthy reason (a deadline) still tries no other route, before or after the first token", async () => {
      const deadline = () => new RunnelError("RUNNEL_ERR_PROVIDER_TIMEOUT", "the stream's deadline passed");
      const before = new AbortController();
      const h1 = harness({ primary: { firstTokenDelayMs: 10_000 }, backup: { tokens: ["x"] } });
      setTimeout(() => before.abort(deadline()), 10);
      const first = await h1.run({ signal: before.signal });
      assert.equal(first.error?.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
      assert.equal(h1.providers.callsTo("backup").length, 0);

      const after = new AbortController();
      const h2 = harness({ primary: { tokens: ["Hel"], hang: true }, backup: { tokens: ["x"] } }, { afterFirstToken: "restart" });
      const second = await h2.run({
        signal: after.signal,
        onEmit: (body) => {
          if (body.$case === "textDelta") setImmediate(() => after.abort(deadline()));
        },
      });
      assert.equal(second.error?.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
      assert.equal(h2.providers.callsTo("backup").length, 0);
      assert.deepEqual(second.events, [started(PRIMARY), text("Hel")]);
    });

    test("aborting after the first token stops the stream there, even with policy restart; the route gets no failure verdict", async () => {
      const controller = new AbortController();
      const h = harness({ primary: { tokens: ["Hel"], hang: true }, backup: { tokens: ["x"] } }, { afterFirstToken: "restart" });
      const outcome = await h.run({
        signal: controller.signal,
        onEmit: (body) => {
          if (body.$case === "textDelta") setImmediate(() => controller.abort(new RunnelError("RUNNEL_ERR_CANCELLED", "cancelled by API")));
        },
      });
      assert.equal(outcome.error?.code, "RUNNEL_ERR_CANCELLED");
      assert.deepEqual(outcome.events, [started(PRIMARY), text("Hel")]);
      assert.equal(h.providers.callsTo("backup").length, 0);
      assert.deepEqual(h.lines(), ["STARTED primary", "FIRST_TOKEN primary", "RELEASED primary RUNNEL_ERR_CANCELLED"]);
      assert.equal(h.health.circuit(PRIMARY), CircuitState.CIRCUIT_STATE_CLOSED);
    });

    test("aborting while a hedge runs aborts both attempts and releases both", async () => {
      const controller = new AbortController();
      const h = harness({ primary: { firstTokenDelayMs: 10_000 }, backup: { firstTokenDelayMs: 10_000 } }, { hedgeAfter: "10ms" });
      setTimeout(() => controller.abort(new RunnelError("RUNNEL_ERR_CANCELLED", "client went away")), 40);
      const outcome = await h.run({ signal: controller.signal });
      assert.equal(outcome.error?.code, "RUNNEL_ERR_CANCELLED");
      assert.deepEqual(
        h.providers.calls.map((call) => [call.provider.name, call.signal.aborted]),
        [
          ["primary", true],
          ["backup", true],
        ],
      );
      await Promise.all(h.providers.running);
      assert.deepEqual([...h.lines()].sort(), [
        "RELEASED backup RUNNEL_ERR_CANCELLED",
        "RELEASED primary RUNNEL_ERR_CANCELLED",
        "STARTED backup",
        "STARTED primary",
      ]);
      assert.equal(h.inFlight.get("backup/b-1"), 0, "the worker's in-flight count of the hedge route is back to 0");
    });
  });

  describe("strategies", () => {
    const sameTier = [
      { ...PRIMARY, priority: 0 },
      { ...BACKUP, priority: 0 },
    ];

    test("least-inflight: the route with fewer in-flight requests in the health book is tried first", async () => {
      const h = harness({ primary: { tokens: ["p"] }, backup: { tokens: ["b"] } }, { strategy: "least-inflight", routes: sameTier });
      const busy = (route: Route, count: number) =>
        h.health.apply({
          ...route,
          workerId: "w-other",
          kind: OutcomeKind.OUTCOME_KIND_STARTED,
          ttftMs: 0,
          retryAfterMs: 0,
          tokens: 0,
          errorCode: "",
          atMs: h.clock.at,
          workerInFlight: count,
        });
      busy(PRIMARY, 5);
      assertServed(await h.run(), BACKUP);
      busy(PRIMARY, 0);
      busy(BACKUP, 5);
      assertServed(await h.run(), PRIMARY);
      assert.deepEqual(
        h.providers.calls.map((call) => call.provider.name),
        ["backup", "primary"],
      );
    });

    test("affinity: the job's affinity key keeps a conversation on one route", async () => {
      const never = () => {
        throw new Error("affinity with a key must not draw");
      };
      const h = harness({ primary: { tokens: ["p"] }, backup: { tokens: ["b"] } }, { strategy: "affinity", routes: sameTier }, { random: never });
      const servedBy = new Set<string>();
      for (let key = 0; key < 20; key++) {
        const first = await h.run({ affinityKey: `session:${key}` });
        const again = await h.run({ affinityKey: `session:${key}` });
        assert.deepEqual(again.result?.served, first.result?.served);
        servedBy.add(first.result?.served?.provider ?? "");
      }
      assert.deepEqual([...servedBy].sort(), ["backup", "primary"], "keys spread over both routes");
    });
  });
});
