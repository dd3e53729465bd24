/**
 * One stream in the playground, from the request to its end, whatever
 * transport carries it: what arrived (the answer with its markers), where
 * it was (the ledger of positions), how fast (the figures), and the verbs
 * the page offers: stop (cancel the stream on the server) and drop (close
 * the connection and resume after the last position, as a client does after
 * a network failure). No DOM: the page renders it on `onChange`.
 */
import { Answer } from "./answer.js";
import { chunkFacts, type Usage } from "./chunks.js";
import { Figures } from "./figures.js";
import { EventLedger } from "./ledger.js";
import { type ChatBody, type Connection, type StreamRef, type Transport, transportById, type WireItem } from "./transports/index.js";
import { authHeaders } from "./transports/types.js";

export type SessionStatus = "connecting" | "streaming" | "resuming" | "done" | "cancelled" | "error";

/** Automatic resumes in a row without a new event before the page gives up. */
const MAX_RESUMES_WITHOUT_PROGRESS = 5;
/** Pause between dropping a connection and resuming. */
const RESUME_DELAY_MS = 250;

export interface SessionOptions {
  readonly transport: Transport;
  readonly body: ChatBody;
  readonly base: string;
  readonly key: string | undefined;
  readonly now?: () => number;
  readonly onChange?: () => void;
}

export class StreamSession {
  readonly answer = new Answer();
  readonly ledger = new EventLedger();
  readonly figures: Figures;
  readonly transport: Transport;
  status: SessionStatus = "connecting";
  stream: StreamRef | undefined;
  /** The upstream model (and provider, after a failover) serving the stream. */
  route: string | undefined;
  finishReason: string | undefined;
  usage: Usage | undefined;
  error: { code: string; message: string } | undefined;
  /** Transports the stream was read over, in order (a dropped NDJSON stream resumes over SSE). */
  readonly carriedBy: string[] = [];
  readonly #options: SessionOptions;
  readonly #now: () => number;
  #connection: Connection | undefined;
  #resumesWithoutProgress = 0;
  #receivedAtResume = 0;
  #cancelling = false;

  constructor(options: SessionOptions) {
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    this.transport = options.transport;
    this.figures = new Figures(this.#now());
  }

  get ended(): boolean {
    return this.status === "done" || this.status === "cancelled" || this.status === "error";
  }

  start(): void {
    this.carriedBy.push(this.transport.id);
    this.#connection = this.transport.open(this.#options.body, this.#context());
  }

  /** Cancels the stream on the server (`DELETE /v1/streams/{id}`); its readers then get RUNNEL_ERR_CANCELLED. */
  async stop(): Promise<void> {
    const stream = this.stream;
    if (!stream || this.ended || this.#cancelling) return;
    this.#cancelling = true;
    this.#changed();
    const response = await fetch(`${this.#options.base}/v1/streams/${encodeURIComponent(stream.streamId)}?token=${encodeURIComponent(stream.resumeToken)}`, {
      method: "DELETE",
      headers: authHeaders(this.#options.key),
    });
    await response.body?.cancel();
    if (!response.ok && !this.ended) this.#fail({ code: `HTTP ${response.status}`, message: "the cancel was refused" });
  }

  /** Closes the connection mid-stream, then resumes after the last position received. */
  drop(): void {
    if (!this.stream || this.ended || this.status === "resuming") return;
    this.#connection?.drop();
    this.answer.marker("resume", `connection dropped after event ${this.ledger.lastSeq}`);
    this.#scheduleResume(RESUME_DELAY_MS);
  }

  get cancelling(): boolean {
    return this.#cancelling;
  }

  #context() {
    return { base: this.#options.base, key: this.#options.key, sink: (item: WireItem) => this.#item(item) };
  }

  #scheduleResume(delayMs: number): void {
    this.status = "resuming";
    this.#changed();
    setTimeout(() => this.#resume(), delayMs);
  }

  #resume(): void {
    const stream = this.stream;
    if (!stream || this.ended) return;
    if (this.ledger.received === this.#receivedAtResume) this.#resumesWithoutProgress += 1;
    else this.#resumesWithoutProgress = 0;
    if (this.#resumesWithoutProgress > MAX_RESUMES_WITHOUT_PROGRESS) {
      this.#fail({ code: "console_gave_up", message: `${MAX_RESUMES_WITHOUT_PROGRESS} resumes in a row brought nothing` });
      return;
    }
    this.#receivedAtResume = this.ledger.received;
    const over = transportById(this.transport.resumesOver ?? this.transport.id) ?? this.transport;
    this.carriedBy.push(over.id);
    const after = this.ledger.resumed();
    this.answer.marker("resume", `resumed over ${over.label} from event ${after}`);
    this.status = "streaming";
    this.#connection = over.resume(stream, after, this.#context());
    this.#changed();
  }

  #item(item: WireItem): void {
    if (this.ended) return;
    switch (item.type) {
      case "opened":
        this.stream ??= { streamId: item.streamId, resumeToken: item.resumeToken };
        if (this.status === "connecting") this.status = "streaming";
        break;
      case "chunk":
        this.#chunk(item.seq, item.chunk);
        break;
      case "done":
        // On WebSocket the done frame is the end event itself, with its position; elsewhere it has none.
        this.ledger.accept(item.seq);
        this.finishReason = item.finishReason ?? this.finishReason;
        this.usage = item.usage ?? this.usage;
        this.status = "done";
        this.figures.end(this.#now());
        break;
      case "error":
        if (item.error.code === "RUNNEL_ERR_CANCELLED") {
          this.status = "cancelled";
          this.figures.end(this.#now());
          this.answer.marker("end", "cancelled");
        } else if (item.error.code === "RUNNEL_ERR_SHUTTING_DOWN" && this.stream) {
          this.answer.marker("restart", "the ingress is restarting");
          this.#scheduleResume(RESUME_DELAY_MS);
          return;
        } else {
          this.#fail(item.error);
          return;
        }
        break;
      case "reconnect":
        if (!this.stream) {
          this.#fail({ code: "console_no_stream", message: item.reason });
          return;
        }
        this.answer.marker("restart", item.reason);
        this.#scheduleResume(item.retryMs ?? RESUME_DELAY_MS);
        return;
    }
    this.#changed();
  }

  #chunk(seq: number | undefined, chunk: unknown): void {
    const facts = chunkFacts(chunk);
    if (this.ledger.accept(seq, facts.usageTrailer) === "duplicate") return;
    if (facts.failover) {
      const { mode, from, to, reasonCode, takeover } = facts.failover;
      const where = (route: { provider: string; model: string } | null) => (route ? `${route.provider}/${route.model}` : "?");
      const text = takeover
        ? `worker lost: another worker took the stream over (${reasonCode})`
        : `failover (${mode}): ${where(from)} → ${where(to)}${reasonCode ? ` (${reasonCode})` : ""}`;
      if (mode === "restart") this.answer.discardSoFar();
      this.answer.marker("failover", mode === "restart" ? `${text}; the answer starts again` : text);
      if (to) this.route = `${to.provider}/${to.model}`;
    } else if (facts.role && facts.model) {
      this.route ??= facts.model;
    }
    if (facts.isDelta) {
      this.figures.token(this.#now());
      this.answer.append(facts.text);
    }
    this.finishReason = facts.finishReason ?? this.finishReason;
    this.usage = facts.usage ?? this.usage;
  }

  #fail(error: { code: string; message: string }): void {
    this.error = error;
    this.status = "error";
    this.figures.end(this.#now());
    this.#changed();
  }

  #changed(): void {
    this.#options.onChange?.();
  }
}
