/**
 * Long-polling, for places where long-lived connections are blocked: the
 * stream is opened with the usual POST, whose headers (within about half a
 * second) give its id and resume token; the POST is then let go (the
 * stream keeps running for `ingress.detachGrace`, and the first poll
 * attaches to it) and the events are read with
 * `GET /v1/streams/{id}/deltas?after=N&wait=MS` until `done`.
 */
import { chunkFacts, errorOf, type Usage } from "../chunks.js";
import { connection, errorAnswer, post } from "./sse.js";
import type { StreamRef, Transport, TransportContext } from "./types.js";
import { authHeaders } from "./types.js";

/** How long one poll waits for the next events, ms. */
const WAIT_MS = 10_000;

interface DeltasAnswer {
  readonly events: readonly { readonly seq: number; readonly chunk?: unknown; readonly error?: unknown }[];
  readonly next: number;
  readonly done: boolean;
}

async function poll(stream: StreamRef, after: number, context: TransportContext, signal: AbortSignal): Promise<void> {
  let position = after;
  let finishReason: string | undefined;
  let usage: Usage | undefined;
  for (;;) {
    const url = `${context.base}/v1/streams/${encodeURIComponent(stream.streamId)}/deltas?after=${position}&wait=${WAIT_MS}&token=${encodeURIComponent(stream.resumeToken)}`;
    const response = await fetch(url, { headers: authHeaders(context.key), signal });
    if (!response.ok) {
      const item = await errorAnswer(response);
      if (item.type === "error" && item.error.code === "RUNNEL_ERR_SHUTTING_DOWN") {
        context.sink({ type: "reconnect", reason: "the ingress is restarting (503 RUNNEL_ERR_SHUTTING_DOWN)", retryMs: 500 });
      } else context.sink(item);
      return;
    }
    const answer = (await response.json()) as DeltasAnswer;
    for (const event of answer.events) {
      const error = event.error === undefined ? undefined : errorOf(event);
      if (error) {
        context.sink({ type: "error", seq: event.seq, error });
        return;
      }
      const facts = chunkFacts(event.chunk);
      finishReason = facts.finishReason ?? finishReason;
      usage = facts.usage ?? usage;
      context.sink({ type: "chunk", seq: event.seq, chunk: event.chunk });
    }
    position = answer.next;
    if (answer.done) {
      context.sink({ type: "done", seq: undefined, finishReason, usage });
      return;
    }
  }
}

export const longPollTransport: Transport = {
  id: "longpoll",
  label: "Long-poll",
  available: true,
  note: "opens with POST, then GET /v1/streams/{id}/deltas?after=N&wait=10000 until done",
  open(body, context) {
    return connection(context, async (guarded, signal) => {
      const opening = new AbortController();
      signal.addEventListener("abort", () => opening.abort(), { once: true });
      let stream: StreamRef | undefined;
      const response = await post(
        body,
        {
          ...guarded,
          sink: (item) => {
            if (item.type === "opened") stream = item;
            guarded.sink(item);
          },
        },
        "text/event-stream",
        opening.signal,
      );
      // Only the headers were wanted: let the POST go, the polls read the stream.
      opening.abort();
      await response?.body?.cancel().catch(() => {});
      if (stream) await poll(stream, 0, guarded, signal);
    });
  },
  resume(stream, after, context) {
    return connection(context, (guarded, signal) => poll(stream, after, guarded, signal));
  },
};
