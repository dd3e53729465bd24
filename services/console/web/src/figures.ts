/**
 * What the playground measures, in the browser, on the page's own clock
 * (`performance.now()`): time to first token from sending the request,
 * tokens per second (rolling over the last second, and overall from the
 * first token to the last), total time, and the gap before each token for
 * the inter-token timeline. A "token" here is one delta that carried text:
 * what the client sees; the provider's count comes with `usage`. Pure.
 */

/** Gaps kept for the timeline (the most recent). */
export const TIMELINE_GAPS = 240;
/** Token arrival times kept for the rolling rate. */
const RECENT = 1024;

export class Figures {
  readonly startedAt: number;
  firstTokenAt: number | undefined;
  lastTokenAt: number | undefined;
  endedAt: number | undefined;
  tokens = 0;
  /** Milliseconds before each of the last TIMELINE_GAPS tokens (the first: the time to first token). */
  readonly gaps: number[] = [];
  readonly #recent: number[] = [];

  constructor(startedAt: number) {
    this.startedAt = startedAt;
  }

  token(at: number): void {
    const previous = this.lastTokenAt ?? this.startedAt;
    this.gaps.push(Math.max(0, at - previous));
    if (this.gaps.length > TIMELINE_GAPS) this.gaps.shift();
    this.#recent.push(at);
    if (this.#recent.length > RECENT) this.#recent.shift();
    this.firstTokenAt ??= at;
    this.lastTokenAt = at;
    this.tokens += 1;
  }

  end(at: number): void {
    this.endedAt ??= at;
  }

  get ttftMs(): number | undefined {
    return this.firstTokenAt === undefined ? undefined : this.firstTokenAt - this.startedAt;
  }

  /** Tokens per second over the `windowMs` before `now` (the end, once ended). */
  rollingRate(now: number, windowMs = 1_000): number {
    const until = this.endedAt ?? now;
    const since = until - windowMs;
    let count = 0;
    for (let index = this.#recent.length - 1; index >= 0; index -= 1) {
      const at = this.#recent[index] as number;
      if (at <= since) break;
      if (at <= until) count += 1;
    }
    return (count * 1_000) / windowMs;
  }

  /** Tokens per second from the first token to the last (undefined before the second token). */
  get overallRate(): number | undefined {
    if (this.firstTokenAt === undefined || this.lastTokenAt === undefined || this.tokens < 2) return undefined;
    const span = this.lastTokenAt - this.firstTokenAt;
    return span > 0 ? ((this.tokens - 1) * 1_000) / span : undefined;
  }

  totalMs(now: number): number {
    return (this.endedAt ?? now) - this.startedAt;
  }
}
