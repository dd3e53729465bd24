/**
 * An incremental Server-Sent Events parser for bodies read with `fetch` (the
 * browser's `EventSource` cannot POST, and cannot send a header). Feed it
 * text as it arrives; it returns every event completed by that text. Pure.
 *
 * Unlike `EventSource`, an event's `id` is the id line of that event only
 * (undefined when it had none): Runnel puts no id on frames outside the
 * stream's log (an error the ingress raised itself, `[DONE]`), and a client
 * counting positions must tell them apart.
 */

export interface SseEvent {
  /** The event's own `id:` line, if it had one. */
  readonly id?: string;
  /** `event:` (absent means "message"). */
  readonly event?: string;
  readonly data: string;
  /** A `retry:` line: the reconnect delay the server asks for, in ms. */
  readonly retry?: number;
}

export class SseParser {
  #buffer = "";
  #id: string | undefined;
  #event: string | undefined;
  #retry: number | undefined;
  #data: string[] = [];
  /** Comment lines seen (heartbeats, `: keep-alive`). */
  comments = 0;

  push(text: string): SseEvent[] {
    this.#buffer += text;
    const events: SseEvent[] = [];
    for (;;) {
      const newline = this.#buffer.search(/\r\n|\r|\n/);
      if (newline < 0) break;
      const width = this.#buffer.startsWith("\r\n", newline) ? 2 : 1;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (width === 1 && this.#buffer[newline] === "\r" && newline === this.#buffer.length - 1) break;
      const line = this.#buffer.slice(0, newline);
      this.#buffer = this.#buffer.slice(newline + width);
      const event = this.#line(line);
      if (event) events.push(event);
    }
    return events;
  }

  #line(line: string): SseEvent | undefined {
    if (line === "") return this.#dispatch();
    if (line.startsWith(":")) {
      this.comments += 1;
      return undefined;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "id") this.#id = value;
    else if (field === "event") this.#event = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.#retry = Number(value);
    return undefined;
  }

  #dispatch(): SseEvent | undefined {
    const hasData = this.#data.length > 0;
    const event: SseEvent | undefined =
      hasData || this.#retry !== undefined
        ? {
            data: this.#data.join("\n"),
            ...(this.#id !== undefined ? { id: this.#id } : {}),
            ...(this.#event !== undefined ? { event: this.#event } : {}),
            ...(this.#retry !== undefined ? { retry: this.#retry } : {}),
          }
        : undefined;
    this.#data = [];
    this.#id = undefined;
    this.#event = undefined;
    this.#retry = undefined;
    return event;
  }
}

/** Splits a newline-delimited body (NDJSON) into complete lines as text arrives; blank lines (heartbeats) are counted, not returned. */
export class LineSplitter {
  #buffer = "";
  blankLines = 0;

  push(text: string): string[] {
    this.#buffer += text;
    const lines = this.#buffer.split("\n");
    this.#buffer = lines.pop() ?? "";
    const complete: string[] = [];
    for (const line of lines) {
      const trimmed = line.trim();
      if (trimmed === "") this.blankLines += 1;
      else complete.push(trimmed);
    }
    return complete;
  }
}
