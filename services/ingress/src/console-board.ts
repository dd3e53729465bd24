/**
 * The inspector's picture of the streams in flight across the cluster,
 * folded from what the bus says: stream records (`runnel_streams`: phase,
 * owner, provider, key name, times), stream events (`runnel.stream.*.events`:
 * first token, tokens so far, attempts, failovers, the end), resumes, and
 * which transport each client reads with. Each stream gets a row for the
 * live list and a short timeline; finished streams linger `lingerMs` with
 * their outcome, then go. No I/O, no clock of its own: console-feed.ts
 * feeds it and asks it for changes.
 *
 * Memory is bounded: at most `maxStreams` rows (more are counted, not
 * kept) and `maxTimeline` entries per row.
 */
import type { PhaseName, StreamRow, TimelineEntry, TimelineKind } from "@runnel/console";
import { failoverJson, isTerminalPhase, openAIFinishReason, type StreamEvent, StreamPhase, type StreamState } from "@runnel/shared/contracts";

export interface BoardOptions {
  /** How long a finished stream stays listed. */
  readonly lingerMs: number;
  /** Most streams tracked at once. */
  readonly maxStreams: number;
  /** Most timeline entries per stream (the first ones and the end are kept). */
  readonly maxTimeline: number;
}

export const DEFAULT_BOARD_OPTIONS: BoardOptions = { lingerMs: 15_000, maxStreams: 5_000, maxTimeline: 40 };

const PHASES: Record<number, PhaseName> = {
  [StreamPhase.STREAM_PHASE_QUEUED]: "queued",
  [StreamPhase.STREAM_PHASE_RUNNING]: "running",
  [StreamPhase.STREAM_PHASE_DONE]: "done",
  [StreamPhase.STREAM_PHASE_FAILED]: "failed",
  [StreamPhase.STREAM_PHASE_CANCELLED]: "cancelled",
};

/** Weight of the newest interval in the tokens-per-second average. */
const RATE_SMOOTHING = 0.5;

interface Entry {
  readonly id: string;
  key: string;
  model: string;
  provider: string;
  route: string;
  owner: string;
  phase: PhaseName;
  outcome: string;
  createdAtMs: number;
  firstTokenAtMs: number | null;
  lastTokenAtMs: number | null;
  endedAtMs: number | null;
  /** Deltas counted on the bus, plus `baseTokens` for a stream first seen mid-way. */
  counted: number;
  baseTokens: number;
  lastSeq: number;
  rate: number | null;
  transport: string;
  partial: boolean;
  /** An event of it was seen (the first one fixes a partial stream's count). */
  seenEvent: boolean;
  readonly timeline: TimelineEntry[];
  /** Tokens at the last tick, for the rate. */
  tickTokens: number;
  tickAtMs: number;
  dirty: boolean;
}

export interface BoardChanges {
  readonly upserts: StreamRow[];
  readonly removes: string[];
}

export class ConsoleBoard {
  readonly options: BoardOptions;
  readonly #entries = new Map<string, Entry>();
  readonly #removed: string[] = [];
  /** Streams left out because `maxStreams` were tracked already (since the board was cleared). */
  overflow = 0;

  constructor(options: Partial<BoardOptions> = {}) {
    this.options = { ...DEFAULT_BOARD_OPTIONS, ...options };
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * A stream record as written to KV at `writtenAtMs`. `live` is false for
   * the records a watch starts with (written before the inspector joined):
   * a finished one older than the linger time is not listed, and a running
   * one is `partial` (its first token and early events were not seen).
   */
  record(state: StreamState, writtenAtMs: number, live: boolean, nowMs: number): void {
    const terminal = isTerminalPhase(state.phase);
    let entry = this.#entries.get(state.streamId);
    if (!entry) {
      if (terminal && !live && nowMs - (state.updatedAtMs || writtenAtMs) > this.options.lingerMs) return;
      // The job's creation time is in the record: the stream's start is known even when the inspector joined later.
      entry = this.#create(state.streamId, state.createdAtMs || writtenAtMs, !live, state.createdAtMs > 0);
      if (!entry) return;
      if (!live) entry.baseTokens = Math.max(0, state.lastSeq - 1);
    }
    if (state.createdAtMs > 0 && state.createdAtMs !== entry.createdAtMs) {
      // First seen by an event (the record came later): the record has the job's real creation time.
      entry.createdAtMs = state.createdAtMs;
      const first = entry.timeline[0];
      if (first?.kind === "queued") entry.timeline[0] = { ...first, atMs: state.createdAtMs };
    }
    entry.key = state.keyId || entry.key;
    entry.model = state.model || entry.model;
    if (state.provider) entry.provider = state.provider;
    entry.lastSeq = Math.max(entry.lastSeq, state.lastSeq);
    if (state.owner && state.owner !== entry.owner) {
      // A record read when the inspector joined was last written then: for a running stream, by its claim.
      this.#note(entry, writtenAtMs, "claimed", entry.owner ? `taken over by ${state.owner} (from ${entry.owner})` : `claimed by ${state.owner}`);
      entry.owner = state.owner;
    }
    if (entry.endedAtMs === null) {
      const phase = PHASES[state.phase] ?? "unknown";
      if (terminal) {
        const outcome =
          state.phase === StreamPhase.STREAM_PHASE_DONE
            ? "done"
            : state.phase === StreamPhase.STREAM_PHASE_CANCELLED
              ? `cancelled${state.cancelReason ? `: ${state.cancelReason}` : ""}`
              : state.errorCode || "failed";
        this.#end(entry, phase, outcome, state.updatedAtMs || writtenAtMs);
      } else entry.phase = phase;
    } else if (state.phase === StreamPhase.STREAM_PHASE_CANCELLED && state.cancelReason) {
      // The record, with the reason, can come after the error event that ended the stream for its readers.
      entry.outcome = `cancelled: ${state.cancelReason}`;
      entry.phase = "cancelled";
    }
    entry.dirty = true;
  }

  /** A stream's record was deleted (its TTL ran out): it goes. */
  deleted(streamId: string): void {
    if (this.#entries.delete(streamId)) this.#removed.push(streamId);
  }

  /** One event of a stream, seen on the bus at `atMs`. */
  event(event: StreamEvent, atMs: number): void {
    const body = event.event;
    if (!body) return;
    let entry = this.#entries.get(event.streamId);
    if (!entry) {
      // Events with no record yet (the watch is late) or of a stream the inspector joined mid-way.
      if (body.$case === "done" || body.$case === "error") return;
      entry = this.#create(event.streamId, atMs, event.seq > 1, false);
      if (!entry) return;
      entry.phase = "running";
    }
    if (entry.partial && !entry.seenEvent) {
      // Joined mid-way: the events before this one (less the role chunk) are the tokens so far, near enough.
      entry.baseTokens = Math.max(entry.baseTokens, event.seq - 2);
    }
    entry.seenEvent = true;
    entry.lastSeq = Math.max(entry.lastSeq, event.seq);
    entry.dirty = true;
    switch (body.$case) {
      case "started":
        entry.provider = body.value.provider;
        entry.route = body.value.model;
        if (entry.phase === "queued" || entry.phase === "unknown") entry.phase = "running";
        this.#note(entry, atMs, "attempt", `attempt ${body.value.attempt || 1} on ${body.value.provider}/${body.value.model}`);
        break;
      case "textDelta":
      case "reasoningDelta":
      case "toolCallDelta":
        entry.counted += 1;
        if (entry.firstTokenAtMs === null && !entry.partial) {
          entry.firstTokenAtMs = atMs;
          this.#note(entry, atMs, "first_token", "first token");
        }
        entry.lastTokenAtMs = atMs;
        break;
      case "failover": {
        const failover = failoverJson(body.value) as { mode: string };
        const from = body.value.from ? `${body.value.from.provider}/${body.value.from.model}` : "?";
        const to = body.value.to ? `${body.value.to.provider}/${body.value.to.model}` : "the next route";
        this.#note(
          entry,
          atMs,
          "failover",
          body.value.takeover
            ? `worker lost: taken over (${body.value.reasonCode})`
            : `${failover.mode}: ${from} failed (${body.value.reasonCode || "?"}) → ${to}`,
        );
        if (body.value.to) {
          entry.provider = body.value.to.provider;
          entry.route = body.value.to.model;
        }
        break;
      }
      case "done": {
        const usage = body.value.usage;
        const finish = openAIFinishReason(body.value.finishReason);
        this.#end(entry, "done", `done (${finish})`, atMs, usage ? `usage ${usage.inputTokens} in, ${usage.outputTokens} out` : undefined);
        break;
      }
      case "error":
        if (body.value.code === "RUNNEL_ERR_CANCELLED") this.#end(entry, "cancelled", "cancelled", atMs, body.value.message);
        else this.#end(entry, "failed", body.value.code, atMs, body.value.message);
        break;
      default:
        break;
    }
  }

  /** A client read the stream again (a resume on any ingress). */
  resumed(streamId: string, atMs: number): void {
    const entry = this.#entries.get(streamId);
    if (entry && entry.endedAtMs === null) this.#note(entry, atMs, "resume", "a client resumed the stream");
  }

  /** How the stream's client reads it. */
  transport(streamId: string, transport: string): void {
    const entry = this.#entries.get(streamId);
    if (entry && entry.transport !== transport) {
      entry.transport = transport;
      entry.dirty = true;
    }
  }

  /** Some running stream's transport is not known yet (its client is on another replica). */
  get transportsWanted(): boolean {
    for (const entry of this.#entries.values()) if (entry.endedAtMs === null && entry.transport === "unknown") return true;
    return false;
  }

  /** Someone asked, from the inspector, to cancel it. */
  cancelRequested(streamId: string, by: string, atMs: number): void {
    const entry = this.#entries.get(streamId);
    if (entry) this.#note(entry, atMs, "cancel", `cancel asked from the inspector${by ? ` by ${by}` : ""}`);
  }

  /**
   * Advances to `nowMs`: refreshes rates, lets finished streams past their
   * linger go, and returns what changed since the last tick.
   */
  tick(nowMs: number): BoardChanges {
    const upserts: StreamRow[] = [];
    for (const entry of this.#entries.values()) {
      if (entry.endedAtMs !== null && nowMs - entry.endedAtMs > this.options.lingerMs) {
        this.#entries.delete(entry.id);
        this.#removed.push(entry.id);
        continue;
      }
      const rate = this.#rate(entry, nowMs);
      if (rate !== entry.rate) {
        entry.rate = rate;
        entry.dirty = true;
      }
      if (entry.dirty) {
        entry.dirty = false;
        upserts.push(rowOf(entry));
      }
    }
    return { upserts, removes: this.#removed.splice(0) };
  }

  /** Every row, as the first message of a feed gives them. */
  rows(): StreamRow[] {
    return [...this.#entries.values()].map(rowOf);
  }

  row(streamId: string): StreamRow | undefined {
    const entry = this.#entries.get(streamId);
    return entry ? rowOf(entry) : undefined;
  }

  timeline(streamId: string): TimelineEntry[] | undefined {
    return this.#entries.get(streamId)?.timeline.slice();
  }

  clear(): void {
    this.#entries.clear();
    this.#removed.length = 0;
    this.overflow = 0;
  }

  #create(id: string, createdAtMs: number, partial: boolean, startKnown: boolean): Entry | undefined {
    if (this.#entries.size >= this.options.maxStreams) {
      this.overflow += 1;
      return undefined;
    }
    const entry: Entry = {
      id,
      key: "",
      model: "",
      provider: "",
      route: "",
      owner: "",
      phase: "queued",
      outcome: "",
      createdAtMs,
      firstTokenAtMs: null,
      lastTokenAtMs: null,
      endedAtMs: null,
      counted: 0,
      baseTokens: 0,
      lastSeq: 0,
      rate: null,
      transport: "unknown",
      partial,
      seenEvent: false,
      timeline: [],
      tickTokens: 0,
      tickAtMs: createdAtMs,
      dirty: true,
    };
    this.#entries.set(id, entry);
    if (startKnown || !partial) this.#note(entry, createdAtMs, "queued", "job queued");
    return entry;
  }

  #end(entry: Entry, phase: PhaseName, outcome: string, atMs: number, detail?: string): void {
    if (entry.endedAtMs !== null) return;
    entry.phase = phase;
    entry.outcome = outcome;
    entry.endedAtMs = atMs;
    this.#note(entry, atMs, "end", detail ? `${outcome}: ${detail}` : outcome, true);
    entry.dirty = true;
  }

  #note(entry: Entry, atMs: number, kind: TimelineKind, text: string, always = false): void {
    const { timeline } = entry;
    // Full: keep the first entries and always the end; what is in between is dropped.
    if (timeline.length >= this.options.maxTimeline && !always) return;
    if (timeline.length >= this.options.maxTimeline) timeline.pop();
    timeline.push({ atMs, kind, text });
    entry.dirty = true;
  }

  #rate(entry: Entry, nowMs: number): number | null {
    const tokens = entry.counted;
    if (entry.endedAtMs !== null || entry.lastTokenAtMs === null) {
      // Ended: first to last token, as the playground reports it (known only when the first token was seen).
      if (entry.firstTokenAtMs === null || entry.lastTokenAtMs === null || tokens < 2) return entry.rate;
      const span = entry.lastTokenAtMs - entry.firstTokenAtMs;
      return span > 0 ? round(((tokens - 1) * 1_000) / span) : entry.rate;
    }
    const elapsed = nowMs - entry.tickAtMs;
    if (elapsed <= 0) return entry.rate;
    const instant = ((tokens - entry.tickTokens) * 1_000) / elapsed;
    entry.tickTokens = tokens;
    entry.tickAtMs = nowMs;
    return round(entry.rate === null ? instant : entry.rate * (1 - RATE_SMOOTHING) + instant * RATE_SMOOTHING);
  }
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}

function rowOf(entry: Entry): StreamRow {
  return {
    id: entry.id,
    key: entry.key,
    model: entry.model,
    provider: entry.provider,
    route: entry.route,
    owner: entry.owner,
    phase: entry.phase,
    outcome: entry.outcome,
    createdAtMs: entry.createdAtMs,
    firstTokenAtMs: entry.firstTokenAtMs,
    endedAtMs: entry.endedAtMs,
    ttftMs: entry.firstTokenAtMs === null ? null : Math.max(0, entry.firstTokenAtMs - entry.createdAtMs),
    tokens: entry.baseTokens + entry.counted,
    rate: entry.rate,
    transport: entry.transport,
    partial: entry.partial,
  };
}
