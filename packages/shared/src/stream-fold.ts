/**
 * The rules of a stream's log, free of I/O: the ownership fence every reader
 * applies (the ingress's readers, live and replaying; a worker reading a
 * stream it takes over), what the log says about a stream so far, and what
 * a takeover announces. The worker's takeover (job-runner.ts) and the
 * ingress's StreamReader both use this module; neither spells the rules
 * again.
 *
 * Fencing: a worker that takes a stream over from a lost one raises the
 * stream's ownership epoch and stamps it on every event it writes, beginning
 * with a fencing event written with JetStream's expected last subject
 * sequence. Once a reader has seen an event of epoch E, in log order, any
 * later event of a lower epoch was written by the worker the stream was
 * taken from, after the takeover: it is not part of the stream.
 */
import { RunnelError } from "./errors.js";
import { type EventBody, errorEvent, type Failover, FailoverMode, type Route, type StreamEvent } from "./events.js";

/** The highest ownership epoch a reader has seen, and what it says about the next event. */
export class EpochFence {
  #epoch = 0;

  get epoch(): number {
    return this.#epoch;
  }

  /** The event was written by a worker the stream was taken from, after the takeover: drop it. */
  fenced(event: StreamEvent): boolean {
    return event.epoch < this.#epoch;
  }

  /**
   * The event comes from a newer owner than any seen: a takeover. Live, a
   * refused fence still reaches subscribers, so only the log says where the
   * new owner's events begin: read it from there.
   */
  newer(event: StreamEvent): boolean {
    return event.epoch > this.#epoch;
  }

  /** An event read (delivered, or passed over in log order) raises the fence to its epoch. */
  raise(epoch: number): void {
    if (epoch > this.#epoch) this.#epoch = epoch;
  }
}

/** What a stream's log says about it: where it is, whether it ended, and what a continuation needs. */
export interface StreamSoFar {
  lastSeq: number;
  /** JetStream sequence of the stream's last message (0: none). */
  lastStreamSeq: number;
  terminal: "done" | "error" | undefined;
  /** The client has tokens. */
  anyToken: boolean;
  /** The text since the last restart (what a continuation sends as the prefill). */
  partialText: string;
  /** Tool calls or reasoning were streamed: a continuation cannot reproduce them. */
  nonText: boolean;
  /** The route serving it at its end. */
  from: Route | undefined;
}

/** Folds a stream's events, in log order, into what it says so far (fencing applied). */
export class StreamFold {
  readonly #fence = new EpochFence();
  readonly state: StreamSoFar = { lastSeq: 0, lastStreamSeq: 0, terminal: undefined, anyToken: false, partialText: "", nonText: false, from: undefined };

  /** Adds the next event of the log, with its JetStream sequence. */
  add(event: StreamEvent, streamSeq: number): void {
    const { state } = this;
    if (streamSeq > state.lastStreamSeq) state.lastStreamSeq = streamSeq;
    if (this.#fence.fenced(event) || event.seq <= state.lastSeq) return;
    this.#fence.raise(event.epoch);
    state.lastSeq = event.seq;
    const body = event.event;
    switch (body?.$case) {
      case "started":
        state.from = { provider: body.value.provider, model: body.value.model };
        break;
      case "textDelta":
        state.anyToken = true;
        state.partialText += body.value.text;
        break;
      case "toolCallDelta":
      case "reasoningDelta":
        state.anyToken = true;
        state.nonText = true;
        break;
      case "failover":
        if (body.value.to) state.from = body.value.to;
        if (body.value.mode === FailoverMode.FAILOVER_MODE_RESTART) {
          state.partialText = "";
          state.nonText = false;
        }
        break;
      case "done":
        state.terminal = "done";
        break;
      case "error":
        state.terminal = "error";
        break;
      default:
        break;
    }
  }
}

/** How a taken-over stream goes on, by the model's after-first-token policy and the route it goes on with. */
export interface TakeoverPlan {
  /** The fencing event's body: the announcement, or the end (policy `error` after tokens went out). */
  readonly fence: EventBody;
  /** The stream ends with RUNNEL_ERR_WORKER_LOST. */
  readonly ends: boolean;
  readonly failover: Failover;
}

/**
 * The takeover of a stream whose worker was lost: with no token out yet, the
 * stream simply starts (next route); with tokens out, `continue` goes on from
 * the partial text on a route that takes a prefill (and only if no tool call
 * or reasoning was streamed), `restart` and an unfit `continue` start over,
 * and `error` ends it with RUNNEL_ERR_WORKER_LOST. Pure.
 */
export function planTakeover(
  soFar: StreamSoFar,
  policy: string,
  next: { readonly provider: string; readonly model: string; readonly acceptsPrefill: boolean } | undefined,
  lostWorker: string,
): TakeoverPlan {
  const reason = `worker ${lostWorker} stopped while generating this stream`;
  const failover: Failover = {
    mode: !soFar.anyToken
      ? FailoverMode.FAILOVER_MODE_NEXT_ROUTE
      : policy === "continue" && !soFar.nonText && next?.acceptsPrefill
        ? FailoverMode.FAILOVER_MODE_CONTINUE
        : FailoverMode.FAILOVER_MODE_RESTART,
    from: soFar.from,
    to: next ? { provider: next.provider, model: next.model } : undefined,
    reasonCode: "RUNNEL_ERR_WORKER_LOST",
    reason,
    takeover: true,
  };
  const ends = soFar.anyToken && policy === "error";
  return {
    fence: ends ? errorEvent(new RunnelError("RUNNEL_ERR_WORKER_LOST", reason)) : { $case: "failover", value: failover },
    ends,
    failover,
  };
}
