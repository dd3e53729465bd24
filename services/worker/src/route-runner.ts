/**
 * Runs one stream across a model's routes: load distribution (the model's
 * strategy over live health), failover before the first token, hedging, and
 * the after-first-token policy (`error`, `restart`, `continue`). Every switch
 * is announced on the stream with a `failover` event.
 *
 * A stream is a series of rounds, each picking the attempt whose first token
 * the client gets: the first round at the start, one more per failure after a
 * first token. The failover budget bounds each round (the wait for a first
 * token), never the generation that follows. Unless the model asks for
 * `sameRouteRetries: always`, an attempt's own retries (the adapter's) are
 * spent only when no other route could take the request at that moment.
 *
 * A transform over the adapters' batches: `events()` yields the stream's
 * events, batch by batch, from whichever provider request serves it. The
 * caller owns the stream (sequence numbers, publishing, records). An
 * attempt's events are held until it produces its first token, so a losing
 * or failing attempt leaves no trace on the stream; after that the serving
 * attempt is read only as the caller pulls (backpressure).
 */
import {
  type ChatRequest,
  type EventBody,
  type Failover,
  FailoverMode,
  type Job,
  type Route,
  RunnelError,
  toRunnelError,
  type Usage,
} from "@runnel/shared/contracts";
import { type HealthBook, type ModelSpec, OutcomeKind, type ProviderSpec, type RouteSpec, type RoutingTable } from "@runnel/shared/domain";
import type { StreamLog } from "@runnel/shared/runtime";
import type { EventBatch, ProviderAdapter } from "./providers/index.js";
import type { AttemptInfo, StreamObserver } from "./stream-observer.js";

/** What the runner reports about one route; the caller adds worker id, in-flight and time, applies it and publishes it. */
export interface OutcomeReport {
  readonly route: Route;
  readonly kind: OutcomeKind;
  readonly ttftMs?: number;
  readonly retryAfterMs?: number;
  readonly tokens?: number;
  readonly errorCode?: string;
}

export interface RouteRunnerDeps {
  readonly table: RoutingTable;
  readonly health: HealthBook;
  readonly adapterFor: (type: string) => ProviderAdapter;
  readonly report: (outcome: OutcomeReport) => void;
  readonly observer: StreamObserver;
  readonly log: StreamLog;
  readonly random?: () => number;
}

/** Where a stream taken over from a lost worker stands. */
export interface ResumePoint {
  /** Text the client already has (since the last restart). */
  readonly partialText: string;
  /** Whether the client already has tokens. */
  readonly anyToken: boolean;
  /** Tool calls or reasoning were streamed: a continuation cannot reproduce them. */
  readonly nonText: boolean;
  /** The route that was serving it. */
  readonly from: Route | undefined;
  /** The mode the takeover's fencing event announced: the first winner does not announce it again. */
  readonly announced: FailoverMode | undefined;
  /** The route the fencing event named as the next one: tried first. */
  readonly to: Route | undefined;
}

export interface RunInput {
  readonly job: Job;
  /** The stream's signal: cancel, shutdown. */
  readonly signal: AbortSignal;
  /** Told when some provider starts (true) or stops (false) working on the request's first token (see ProviderWaiting). */
  readonly onWaiting?: (waiting: boolean) => void;
  readonly resume?: ResumePoint;
}

/** The route that served the stream, and its usage. */
export interface RunResult {
  readonly served: Route;
  readonly usage: Usage | undefined;
}

/** A route passed over, and whether for rate limiting (a cooldown, a provider budget): what the error says when nothing is left. */
interface Skip {
  readonly reason: string;
  readonly rateLimited: boolean;
}

type Settled = { ok: true } | { ok: false; error: RunnelError };

/** How an attempt's first phase ended: it has its first token, or it ended without one. */
type Prelude = { readonly first: true } | { readonly first: false; readonly settled: Settled };

/** One provider request on one route: its batches, read ahead until its first token, then as the runner pulls. */
class Attempt {
  readonly controller = new AbortController();
  readonly startedAt = performance.now();
  readonly info: AttemptInfo;
  /** Events held until this attempt wins. */
  held: EventBody[] = [];
  gotFirst = false;
  usage: Usage | undefined;
  /** How it ended, once it has (before a first token, or after it). */
  settledWith: Settled | undefined;
  /** Resolves when it has its first token or ended without one. */
  prelude!: Promise<Prelude>;
  #iterator: AsyncIterator<EventBatch> | undefined;
  #failure: (error: unknown) => RunnelError = toRunnelError;
  /** Run once it has ended, however (the stream signal's listener goes). */
  onEnded: () => void = () => {};

  constructor(
    readonly spec: RouteSpec,
    info: AttemptInfo,
  ) {
    this.info = info;
  }

  get route(): Route {
    return { provider: this.spec.provider, model: this.spec.model };
  }

  /** Starts reading `batches` until the first token; `onFirst` is told at once (before any verdict on the route). */
  begin(batches: AsyncIterable<EventBatch>, failure: (error: unknown) => RunnelError, onFirst: () => void): void {
    const iterator = batches[Symbol.asyncIterator]();
    this.#iterator = iterator;
    this.#failure = failure;
    this.prelude = (async (): Promise<Prelude> => {
      try {
        for (;;) {
          const next = await iterator.next();
          if (next.done) return this.#settle({ ok: true });
          for (const body of next.value) {
            if (body.$case === "usage") this.usage = body.value;
            this.held.push(body);
            if (!this.gotFirst && body.$case !== "started" && body.$case !== "usage") this.gotFirst = true;
          }
          if (this.gotFirst) {
            onFirst();
            return { first: true };
          }
        }
      } catch (error) {
        return this.#settle({ ok: false, error: failure(error) });
      }
    })();
  }

  #settle(settled: Settled): Prelude {
    this.settledWith = settled;
    this.onEnded();
    return { first: false, settled };
  }

  /** After the win: the next batch, or undefined at its honest end; throws its failure. */
  async next(): Promise<EventBatch | undefined> {
    const iterator = this.#iterator as AsyncIterator<EventBatch>;
    try {
      const next = await iterator.next();
      if (next.done) {
        this.settledWith = { ok: true };
        this.onEnded();
        return undefined;
      }
      for (const body of next.value) if (body.$case === "usage") this.usage = body.value;
      return next.value;
    } catch (error) {
      const failure = this.#failure(error);
      this.settledWith = { ok: false, error: failure };
      this.onEnded();
      throw failure;
    }
  }

  /** Ends the request (abort) and its iteration, so the adapter tidies up whether it waits on the network or on a pull. */
  abandon(reason: RunnelError): void {
    this.controller.abort(reason);
    void this.#iterator?.return?.().catch(() => {});
  }
}

/** Failures a next route may fix, before the first token: the catalogue's failover rule of the code (docs/errors.md). */
function failsOver(error: RunnelError, model: ModelSpec | undefined): boolean {
  switch (error.spec.failover) {
    case "next-route":
    case "larger-context":
      return true;
    case "if-configured":
      return model?.failoverOnContentPolicy === true;
    case "never":
      return false;
  }
}

/** How a failure counts against the route's health: the catalogue's verdict of the code. */
function outcomeKind(error: RunnelError): OutcomeKind {
  switch (error.spec.health) {
    case "rate-limited":
      return OutcomeKind.OUTCOME_KIND_RATE_LIMITED;
    case "failure":
      return OutcomeKind.OUTCOME_KIND_FAILED;
    case "none":
      // Cancelled, a client error, a lost hedge: no verdict on the route.
      return OutcomeKind.OUTCOME_KIND_RELEASED;
  }
}

/** The routes a job pins, with the model's settings for those it declares (defaults for the others). */
function pinnedSpecs(job: Job, model: ModelSpec | undefined): RouteSpec[] {
  return job.routes.map(
    (route) =>
      model?.routes.find((spec) => spec.provider === route.provider && spec.model === route.model) ?? {
        ...route,
        weight: 1,
        priority: 0,
        timeouts: undefined,
        acceptsPrefill: false,
        contextWindow: 0,
      },
  );
}

export class RouteRunner {
  readonly #deps: RouteRunnerDeps;
  readonly #input: RunInput;
  readonly #model: ModelSpec | undefined;
  readonly #queue: RouteSpec[];
  readonly #maxRoutes: number;
  readonly #budgetMs: number;
  readonly #hedgeAfterMs: number;
  readonly #policy: string;
  readonly #retrySameRouteFirst: boolean;
  /** When the current round began: the failover budget counts from here. */
  #roundStartedAt = performance.now();
  /** The attempts of the current round that have not been given up yet. */
  #active = new Set<Attempt>();
  /** The attempt whose events the stream is carrying now. */
  #serving: Attempt | undefined;
  #result: RunResult | undefined;
  /** The first attempt of the round the winner came from: the `from` of a hedge's announcement. */
  #firstLaunched: Attempt | undefined;
  #tried = 0;
  /** Skipped routes and why, for the error when nothing is left. */
  readonly #skipped: Skip[] = [];
  /** Failures before the current winner, for the error when nothing is left. */
  #lastError: RunnelError | undefined;
  /** The failure after the first token that started the current failover: never masked by what follows. */
  #original: RunnelError | undefined;
  /** Text the client has since the last restart, for a continuation. */
  #partial: string;
  #anyToken: boolean;
  #nonText: boolean;
  #served: Route | undefined;
  #startedSent = false;
  /** The switch the takeover's fencing event already announced: not announced twice. */
  #announced: FailoverMode | undefined;
  #announcedTo: Route | undefined;
  /** A context-length failure: only routes with a window larger than this may follow. */
  #needWindow = -1;

  constructor(deps: RouteRunnerDeps, input: RunInput) {
    this.#deps = deps;
    this.#input = input;
    const { table } = deps;
    this.#model = table.model(input.job.model);
    const planned =
      input.job.routes.length > 0 ? pinnedSpecs(input.job, this.#model) : table.planRoutes(input.job.model, deps.health, input.job.affinityKey, deps.random);
    const announcedTo = input.resume?.to;
    const promised = announcedTo ? planned.findIndex((spec) => spec.provider === announcedTo.provider && spec.model === announcedTo.model) : -1;
    if (promised > 0) planned.unshift(...planned.splice(promised, 1));
    this.#queue = planned;
    this.#announcedTo = announcedTo;
    this.#maxRoutes = this.#model?.maxRoutes || 3;
    this.#budgetMs = this.#model?.failoverBudgetMs || 30_000;
    this.#hedgeAfterMs = this.#model?.hedgeAfterMs ?? 0;
    this.#policy = this.#model?.afterFirstToken || "error";
    this.#retrySameRouteFirst = this.#model?.sameRouteRetries === "always";
    this.#partial = input.resume?.partialText ?? "";
    this.#anyToken = input.resume?.anyToken ?? false;
    this.#nonText = input.resume?.nonText ?? false;
    this.#served = input.resume?.from;
    this.#announced = input.resume?.announced;
    // A takeover already has its `started` on the stream.
    this.#startedSent = input.resume?.anyToken ?? false;
  }

  /** The route that served and its usage, once `events()` has ended with `done`. */
  get result(): RunResult {
    if (!this.#result) throw new RunnelError("RUNNEL_ERR_INTERNAL", "the route runner has not finished the stream");
    return this.#result;
  }

  /**
   * The stream's events, batch by batch, `done` last; throws a RunnelError
   * when the stream must end with an error. Stopping the iteration (the
   * caller's `return`) abandons whatever attempt runs.
   */
  async *events(): AsyncGenerator<EventBatch, void, undefined> {
    try {
      for (;;) {
        let winner: Attempt;
        try {
          winner = await this.#pickWinner();
        } catch (error) {
          const failure = toRunnelError(error);
          if (this.#original && failure.code !== "RUNNEL_ERR_CANCELLED" && failure.code !== "RUNNEL_ERR_SHUTTING_DOWN") {
            // A failover after the first token failed too: the client hears of the original failure.
            throw new RunnelError(this.#original.code, `${this.#original.message}; failing over did not help: ${failure.message}`, { cause: this.#original });
          }
          throw failure;
        }
        this.#serving = winner;
        const opening = this.#win(winner);
        if (opening.length > 0) yield opening;
        let failed: RunnelError | undefined;
        try {
          for (;;) {
            const batch = await winner.next();
            if (batch === undefined) break;
            const out = this.#forward(batch);
            if (out.length > 0) yield out;
          }
        } catch (error) {
          failed = toRunnelError(error);
        }
        this.#serving = undefined;
        if (!failed) {
          this.#report(winner, OutcomeKind.OUTCOME_KIND_SUCCEEDED);
          this.#result = { served: winner.route, usage: winner.usage };
          return;
        }
        // Failed after its first token.
        this.#report(winner, outcomeKind(failed), failed);
        this.#deps.observer.attemptEnded(winner.info, failed.code);
        // A context too long for the route cannot be continued or restarted elsewhere after its first token either.
        if (this.#input.signal.aborted || this.#policy === "error" || !failsOver(failed, this.#model) || failed.spec.failover === "larger-context") {
          throw failed;
        }
        this.#original ??= failed;
        this.#lastError = failed;
        this.#deps.log.warn({ provider: winner.spec.provider, code: failed.code, policy: this.#policy }, "route failed after the first token; failing over");
      }
    } finally {
      // Stopped early (the caller's return, or a failure of the caller's own): no request may run on.
      const stop = new RunnelError("RUNNEL_ERR_CANCELLED", "the stream stopped reading");
      if (this.#serving?.settledWith === undefined) this.#serving?.abandon(stop);
      for (const attempt of this.#active) if (attempt.settledWith === undefined && attempt !== this.#serving) attempt.abandon(stop);
    }
  }

  /** One round: starts routes until one produces a first token (hedging when configured); throws when none can. */
  async #pickWinner(): Promise<Attempt> {
    this.#roundStartedAt = performance.now();
    const active = new Set<Attempt>();
    this.#active = active;
    const first = this.#launchNext(false);
    if (!first) throw this.#nothingLeft();
    active.add(first);
    let hedged = false;
    for (;;) {
      const races: Promise<{ kind: "first" | "settled" | "hedge"; attempt?: Attempt }>[] = [];
      for (const attempt of active)
        races.push(attempt.prelude.then((prelude) => ({ kind: prelude.first ? ("first" as const) : ("settled" as const), attempt })));
      let hedgeTimer: NodeJS.Timeout | undefined;
      if (this.#hedgeAfterMs > 0 && !hedged && active.size === 1 && this.#queue.length > 0) {
        const [only] = active;
        const wait = Math.max(0, this.#hedgeAfterMs - (performance.now() - (only as Attempt).startedAt));
        races.push(
          new Promise((resolve) => {
            hedgeTimer = setTimeout(() => resolve({ kind: "hedge" }), wait);
          }),
        );
      }
      const result = await Promise.race(races);
      if (hedgeTimer) clearTimeout(hedgeTimer);
      if (result.kind === "hedge") {
        hedged = true;
        const hedge = this.#launchNext(true);
        if (hedge) active.add(hedge);
        continue;
      }
      const attempt = result.attempt as Attempt;
      if (result.kind === "first") {
        for (const other of active) {
          if (other === attempt) continue;
          other.abandon(new RunnelError("RUNNEL_ERR_CANCELLED", "another route answered first"));
          this.#report(other, OutcomeKind.OUTCOME_KIND_RELEASED);
          this.#deps.observer.attemptEnded(other.info, "RUNNEL_ERR_CANCELLED");
        }
        this.#firstLaunched = first;
        return attempt;
      }
      // Settled without a first token: it failed (an adapter that resolves has emitted `done`, a first token).
      active.delete(attempt);
      const error = attempt.settledWith?.ok === false ? attempt.settledWith.error : new RunnelError("RUNNEL_ERR_INTERNAL", "attempt ended without a token");
      this.#report(attempt, outcomeKind(error), error);
      this.#deps.observer.attemptEnded(attempt.info, error.code);
      if (this.#input.signal.aborted) {
        // The stream is cancelled: the other attempts (a hedge) end too; report each once it has stopped.
        await Promise.all(
          [...active].map(async (other) => {
            const prelude = await other.prelude;
            const settled: Settled = prelude.first ? { ok: true } : prelude.settled;
            const otherError = settled.ok ? undefined : settled.error;
            this.#report(other, OutcomeKind.OUTCOME_KIND_RELEASED, otherError);
            this.#deps.observer.attemptEnded(other.info, otherError?.code ?? "RUNNEL_ERR_CANCELLED");
          }),
        );
        throw error;
      }
      if (attempt.info.prefill && error.code === "RUNNEL_ERR_PROVIDER_BAD_REQUEST") {
        // The route refused the prefill: the same route, restarted, without it.
        this.#deps.log.warn({ provider: attempt.spec.provider, err: error.message }, "route rejected the prefill; restarting there instead");
        this.#queue.unshift({ ...attempt.spec, acceptsPrefill: false });
        this.#tried -= 1;
      } else if (!failsOver(error, this.#model)) {
        if (active.size === 0) throw error;
        continue;
      } else {
        this.#lastError = error;
        if (error.spec.failover === "larger-context") this.#needWindow = Math.max(this.#needWindow, attempt.spec.contextWindow);
      }
      if (active.size === 0) {
        const next = this.#launchNext(false);
        if (!next) throw this.#nothingLeft();
        active.add(next);
      }
    }
  }

  /** Why no further route may start in this round, or undefined while one may. */
  #limitReached(): string | undefined {
    if (this.#tried >= this.#maxRoutes) return `the model's limit of ${this.#maxRoutes} routes was reached`;
    if (this.#tried > 0 && performance.now() - this.#roundStartedAt > this.#budgetMs) return `the failover budget of ${this.#budgetMs} ms was spent`;
    return undefined;
  }

  /** The provider a route would run on now, or why it cannot be tried. Reads health; changes nothing. */
  #candidate(spec: RouteSpec): { readonly provider: ProviderSpec } | { readonly unfit: Skip } {
    const name = `${spec.provider}/${spec.model}`;
    if (this.#needWindow >= 0 && !(spec.contextWindow > this.#needWindow))
      return { unfit: { reason: `${name}: context window not larger than the one that was exceeded`, rateLimited: false } };
    const route = { provider: spec.provider, model: spec.model };
    const admission = this.#deps.health.admission(route);
    // A cooldown or a provider budget is rate limiting; an open circuit is not.
    if (!admission.ok)
      return { unfit: { reason: `${name}: ${admission.reason} for ${admission.retryAfterMs} ms`, rateLimited: admission.reason !== "circuit-open" } };
    const provider = this.#deps.table.providerForRoute(this.#input.job.model, route);
    return provider ? { provider } : { unfit: { reason: `${name}: provider not in this worker's routing snapshot`, rateLimited: false } };
  }

  /**
   * Whether the request could be served without `attempt` right now: another
   * attempt of this round still runs (a hedge), or a route that could start
   * is left within the limits. Then `attempt` is not retried on its route.
   */
  #canServeWithout(attempt: Attempt): boolean {
    for (const other of this.#active) if (other !== attempt && other.settledWith === undefined) return true;
    if (this.#limitReached() !== undefined) return false;
    return this.#queue.some((spec) => "provider" in this.#candidate(spec));
  }

  /** The next admissible route, started; undefined when none is left within the limits. */
  #launchNext(hedge: boolean): Attempt | undefined {
    while (this.#queue.length > 0) {
      const limit = this.#limitReached();
      if (limit) {
        this.#skipped.push({ reason: limit, rateLimited: false });
        return undefined;
      }
      const spec = this.#queue.shift() as RouteSpec;
      const candidate = this.#candidate(spec);
      if ("unfit" in candidate) {
        this.#skipped.push(candidate.unfit);
        continue;
      }
      const { provider } = candidate;
      const route = { provider: spec.provider, model: spec.model };
      const prefill = this.#anyToken && this.#policy === "continue" && spec.acceptsPrefill && !this.#nonText;
      this.#tried += 1;
      const attempt = new Attempt(spec, { route, providerType: provider.type, index: this.#tried, hedge, prefill });
      this.#start(attempt, provider, prefill);
      return attempt;
    }
    return undefined;
  }

  #start(attempt: Attempt, provider: ProviderSpec, prefill: boolean): void {
    const { signal } = this.#input;
    const onAbort = () => attempt.controller.abort(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    this.#report(attempt, OutcomeKind.OUTCOME_KIND_STARTED);
    // The attempt's span when tracing; else whatever trace context the client sent, passed on as it came.
    const traceHeaders = this.#deps.observer.attemptStarted(attempt.info) ?? this.#input.job.traceContext;
    const request = prefill ? withPrefill(this.#input.job.request, this.#partial) : (this.#input.job.request ?? emptyRequest());
    const batches = this.#deps.adapterFor(provider.type).stream({
      request,
      model: attempt.spec.model,
      provider,
      signal: attempt.controller.signal,
      traceHeaders,
      onWaiting: (waiting) => this.#waitingFor(attempt, waiting),
      ...(this.#retrySameRouteFirst ? {} : { canFailOver: () => this.#canServeWithout(attempt) }),
      onRetry: (notice) => this.#deps.observer.retry(notice.provider, notice.attempt, notice.delayMs, notice.code),
    });
    attempt.onEnded = () => signal.removeEventListener("abort", onAbort);
    const failure = (error: unknown): RunnelError => {
      if (!attempt.controller.signal.aborted) return toRunnelError(error);
      // Cancelled (the stream, or a lost hedge): no verdict on the route.
      const reason: unknown = attempt.controller.signal.reason;
      return reason instanceof RunnelError
        ? reason
        : new RunnelError("RUNNEL_ERR_CANCELLED", reason instanceof Error ? reason.message : "cancelled", { cause: error });
    };
    // The first-token report goes out the moment it comes, before any verdict, so health sees them in order.
    attempt.begin(batches, failure, () => {
      const ttftMs = Math.round(performance.now() - attempt.startedAt);
      this.#report(attempt, OutcomeKind.OUTCOME_KIND_FIRST_TOKEN, undefined, ttftMs);
      this.#deps.observer.firstToken(attempt.info, ttftMs);
    });
  }

  /** The attempt produced the first token: the opening batch, the switch announced if there was one, then what it held. */
  #win(winner: Attempt): EventBatch {
    const firstLaunched = this.#firstLaunched ?? winner;
    const opening: EventBody[] = [];
    const failedBefore = this.#lastError !== undefined;
    const afterFirstToken = this.#anyToken;
    let mode: FailoverMode | undefined;
    if (afterFirstToken) mode = winner.info.prefill ? FailoverMode.FAILOVER_MODE_CONTINUE : FailoverMode.FAILOVER_MODE_RESTART;
    else if (winner.info.hedge) mode = FailoverMode.FAILOVER_MODE_HEDGE;
    else if (failedBefore) mode = FailoverMode.FAILOVER_MODE_NEXT_ROUTE;
    const cause = this.#original ?? this.#lastError;
    const promised = this.#announcedTo;
    const keptPromise = mode === this.#announced && promised?.provider === winner.spec.provider && promised.model === winner.spec.model;
    if (mode !== undefined && !keptPromise) {
      const failover: Failover = {
        mode,
        from: this.#served ?? firstLaunched.route,
        to: winner.route,
        reasonCode: mode === FailoverMode.FAILOVER_MODE_HEDGE ? "" : (cause?.code ?? ""),
        reason: mode === FailoverMode.FAILOVER_MODE_HEDGE ? `no first token within ${this.#hedgeAfterMs} ms` : (cause?.message ?? ""),
        takeover: false,
      };
      opening.push({ $case: "failover", value: failover });
      this.#deps.observer.failover(failover);
    }
    this.#announced = undefined;
    this.#announcedTo = undefined;
    if (mode === FailoverMode.FAILOVER_MODE_RESTART) this.#partial = "";
    this.#anyToken = true;
    this.#served = winner.route;
    this.#original = undefined;
    this.#lastError = undefined;
    this.#needWindow = -1;
    const held = winner.held;
    winner.held = [];
    return opening.concat(this.#forward(held));
  }

  /** The serving attempt's batch as the stream carries it: one `started` per stream, and what a continuation needs to know. */
  #forward(batch: EventBatch): EventBatch {
    let out: EventBody[] | undefined;
    for (const [index, body] of batch.entries()) {
      if (body.$case === "started") {
        // One `started` per stream: a switch is announced by the failover event instead.
        if (this.#startedSent) {
          out ??= batch.slice(0, index);
          continue;
        }
        this.#startedSent = true;
      } else if (body.$case === "textDelta") this.#partial += body.value.text;
      else if (body.$case === "toolCallDelta" || body.$case === "reasoningDelta") this.#nonText = true;
      out?.push(body);
    }
    return out ?? batch;
  }

  /** Attempts whose provider accepted the request and works on its first token. */
  readonly #waiting = new Set<Attempt>();

  #waitingFor(attempt: Attempt, waiting: boolean): void {
    const before = this.#waiting.size > 0;
    if (waiting) this.#waiting.add(attempt);
    else this.#waiting.delete(attempt);
    const now = this.#waiting.size > 0;
    if (now !== before) this.#input.onWaiting?.(now);
  }

  #report(attempt: Attempt, kind: OutcomeKind, error?: RunnelError, ttftMs?: number): void {
    const tokens = attempt.usage ? attempt.usage.inputTokens + attempt.usage.outputTokens : 0;
    this.#deps.report({
      route: attempt.route,
      kind,
      ...(ttftMs === undefined ? {} : { ttftMs }),
      ...(error && "retryAfterMs" in error && typeof error.retryAfterMs === "number" ? { retryAfterMs: error.retryAfterMs } : {}),
      ...(tokens > 0 ? { tokens } : {}),
      ...(error ? { errorCode: error.code } : {}),
    });
  }

  #nothingLeft(): RunnelError {
    const reasons = this.#skipped.map((skip) => skip.reason).join("; ");
    if (this.#lastError) {
      if (this.#skipped.length === 0) return this.#lastError;
      return new RunnelError(this.#lastError.code, `${this.#lastError.message} (no other route: ${reasons})`, { cause: this.#lastError });
    }
    const rateLimited = this.#skipped.length > 0 && this.#skipped.every((skip) => skip.rateLimited);
    return new RunnelError(
      rateLimited ? "RUNNEL_ERR_PROVIDER_RATE_LIMITED" : "RUNNEL_ERR_NO_ROUTE",
      `no route of model "${this.#input.job.model}" can take the request now: ${reasons || "it has no routes"}`,
    );
  }
}

function emptyRequest(): ChatRequest {
  return { messages: [], stop: [], tools: [], toolChoiceJson: "", includeUsage: false, user: "" };
}

/** The request with the partial answer as a trailing assistant message, for the next route to continue. */
function withPrefill(request: ChatRequest | undefined, partial: string): ChatRequest {
  const base = request ?? emptyRequest();
  return {
    ...base,
    messages: [...base.messages, { role: "assistant", content: [{ part: { $case: "text", value: partial } }], name: "", toolCallId: "", toolCalls: [] }],
  };
}
