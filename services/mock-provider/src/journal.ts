/**
 * The journal: what the mock saw and did for each chat request, so a test
 * (in process, or over `GET /_mock/requests`) can check what a client or a
 * gateway actually sent and when it hung up. Bounded: it keeps the latest
 * entries only.
 */
import { EventEmitter } from "node:events";

/** One chat-completion request as the mock saw it. Times are Unix epoch milliseconds. */
export interface JournalEntry {
  /** The completion id (`chatcmpl-mock-<n>`, `msg_mock_<n>`, `gemini-mock-<n>` or `resp_mock_<n>`). */
  id: string;
  /** The wire format of the request: `openai`, `anthropic`, `gemini` or `openai-responses`. */
  format: "openai" | "anthropic" | "gemini" | "openai-responses";
  /** The request's `model` string, scenario included; null when the body could not be read. */
  model: string | null;
  /** The injected failure, if any. */
  fail: string | null;
  /** Whether the request asked for a stream. */
  stream: boolean;
  receivedAt: number;
  /** When the response headers went out; null if they never did. */
  headersSentAt: number | null;
  /** HTTP status sent; null if none was. */
  status: number | null;
  /** Content tokens written so far. */
  tokensSent: number;
  /** When the first content token went out; null until one did. */
  firstTokenAt: number | null;
  /** The response ended normally. */
  finished: boolean;
  /** The peer closed the connection before the response finished. */
  clientClosed: boolean;
  clientClosedAt: number | null;
  /** Whether the format's credential header came: Authorization, x-api-key or x-goog-api-key (the key itself is never stored). */
  authorization: boolean;
  /** SHA-256 (hex) of that credential, so a test can check which key arrived without the mock keeping it. */
  credentialSha256: string | null;
  /** The W3C `traceparent` header the request carried (a gateway continuing the client's trace), if any. */
  traceparent: string | null;
  /** Bytes of the request body as received; null until it was read (or when it was over the limit). */
  bodyBytes: number | null;
  /**
   * The conversation's turns (role as the format names it, text parts joined,
   * each cut to JOURNAL_TEXT_LIMIT characters), so a test can check what a
   * gateway sent, a prefill for instance. Empty when the body could not be read.
   */
  messages: { role: string; text: string }[];
  /**
   * Of each turn of `messages`, in the same order, its whole text: the length
   * in UTF-16 code units (JavaScript's string length) and the SHA-256 (hex) of
   * its UTF-8 bytes, so a test can check that a long turn arrived whole.
   */
  messageDigests: { length: number; sha256: string }[];
}

/** Characters of each message's text the journal keeps. */
export const JOURNAL_TEXT_LIMIT = 4096;

/** How many entries the journal keeps by default. */
export const JOURNAL_LIMIT = 1000;

/** Recent chat requests, newest last. */
export class Journal {
  readonly #entries: JournalEntry[] = [];
  readonly #events = new EventEmitter();
  readonly #limit: number;

  constructor(limit: number = JOURNAL_LIMIT) {
    this.#limit = limit;
    this.#events.setMaxListeners(0);
  }

  /** Adds an entry (the journal keeps a reference: call `changed` after mutating it). */
  add(entry: JournalEntry): void {
    this.#entries.push(entry);
    if (this.#entries.length > this.#limit) this.#entries.splice(0, this.#entries.length - this.#limit);
    this.#events.emit("change", entry);
  }

  /** Tells waiters that `entry` was updated. */
  changed(entry: JournalEntry): void {
    this.#events.emit("change", entry);
  }

  /** Copies of the entries, oldest first. */
  entries(): JournalEntry[] {
    return this.#entries.map((entry) => ({ ...entry }));
  }

  /** Forgets every entry. */
  clear(): void {
    this.#entries.length = 0;
  }

  /**
   * Resolves with (a copy of) the first entry that matches `predicate`, now or
   * after a later change; rejects if none does within `timeoutMs`.
   */
  waitFor(predicate: (entry: Readonly<JournalEntry>) => boolean, timeoutMs = 5000): Promise<JournalEntry> {
    const found = this.#entries.find(predicate);
    if (found) return Promise.resolve({ ...found });
    return new Promise((resolve, reject) => {
      const onChange = (entry: JournalEntry): void => {
        if (!predicate(entry)) return;
        cleanup();
        resolve({ ...entry });
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`journal: no matching entry within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.#events.off("change", onChange);
      };
      this.#events.on("change", onChange);
    });
  }
}
