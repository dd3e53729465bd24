/**
 * Flow control of one WebSocket: when more than `maxBufferBytes` wait in
 * the socket (`bufferedAmount`), every reader on it pauses (their events
 * wait in the replay log, nothing is dropped); once the buffer is down to
 * half, they resume in turn, from a rotating start so that no stream always
 * goes first. A socket whose buffer does not shrink for
 * `stuckClientTimeoutMs` is stuck: the session closes it.
 */
import type { StreamReader } from "./stream-reader.js";

/** How often a congested socket's buffer is looked at. */
const BACKPRESSURE_POLL_MS = 20;

export interface FlowControlOptions {
  /** The socket: only how much waits in it is read. */
  readonly socket: { readonly bufferedAmount: number };
  readonly maxBufferBytes: number;
  readonly stuckClientTimeoutMs: number;
  /** The readers of the socket's streams now (one not started yet: undefined). */
  readonly readers: () => ReadonlyArray<StreamReader | undefined>;
  /** The socket became congested: every reader was paused. */
  readonly onCongested: () => void;
  /** The socket drained: the readers resume. */
  readonly onDrained: () => void;
  /** The socket took nothing for `stuckClientTimeoutMs`, `buffered` bytes waiting. */
  readonly onStuck: (buffered: number) => void;
}

export class SocketFlowControl {
  readonly #options: FlowControlOptions;
  #congested = false;
  #pollTimer: NodeJS.Timeout | undefined;
  #lastBuffered = 0;
  #progressAt = 0;
  #rotation = 0;

  constructor(options: FlowControlOptions) {
    this.#options = options;
  }

  /** True while the socket's buffer is over the limit and its readers wait. */
  get congested(): boolean {
    return this.#congested;
  }

  /** After each frame sent: pauses every reader once the socket's buffer is over the limit. */
  sent(): void {
    if (!this.#congested && this.#options.socket.bufferedAmount > this.#options.maxBufferBytes) this.#congest();
  }

  /** A reader that starts on a congested socket waits too. */
  admit(reader: StreamReader): void {
    if (this.#congested) reader.pause();
  }

  /** The socket is closing: no more polling. */
  stop(): void {
    clearInterval(this.#pollTimer);
    this.#pollTimer = undefined;
  }

  #congest(): void {
    this.#congested = true;
    for (const reader of this.#options.readers()) reader?.pause();
    this.#options.onCongested();
    this.#lastBuffered = this.#options.socket.bufferedAmount;
    this.#progressAt = Date.now();
    this.#pollTimer = setInterval(() => this.#poll(), BACKPRESSURE_POLL_MS);
  }

  #poll(): void {
    const buffered = this.#options.socket.bufferedAmount;
    const now = Date.now();
    if (buffered < this.#lastBuffered) this.#progressAt = now;
    this.#lastBuffered = buffered;
    if (buffered <= this.#options.maxBufferBytes / 2) {
      this.#decongest();
      return;
    }
    if (now - this.#progressAt >= this.#options.stuckClientTimeoutMs) {
      this.stop();
      this.#options.onStuck(buffered);
    }
  }

  #decongest(): void {
    this.#congested = false;
    this.stop();
    this.#options.onDrained();
    // Resumed in turn from a rotating start; a resumed reader may congest the socket again, which stops the round.
    const readers = this.#options.readers();
    const start = readers.length === 0 ? 0 : this.#rotation++ % readers.length;
    for (let index = 0; index < readers.length && !this.#congested; index += 1) {
      readers[(start + index) % readers.length]?.resume();
    }
  }
}
