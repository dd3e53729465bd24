/**
 * NDJSON: the same POST with `Accept: application/x-ndjson`, one chunk per
 * line. Lines carry no position; one chunk is one event (docs/api.md), so a
 * line's position is its count, except the usage chunk, which shares the
 * finish chunk's. NDJSON has no resume route of its own: a dropped NDJSON
 * stream resumes over SSE from that count.
 */
import { chunkFacts, errorOf, type Usage } from "../chunks.js";
import { LineSplitter } from "../sse-parser.js";
import { connection, post, readText, resumeSse } from "./sse.js";
import type { Transport, TransportContext } from "./types.js";

async function pumpNdjson(response: Response, context: TransportContext, isDropped: () => boolean): Promise<void> {
  const lines = new LineSplitter();
  let position = 0;
  let finishReason: string | undefined;
  let usage: Usage | undefined;
  let ended = false;
  try {
    await readText(response, (text) => {
      for (const line of lines.push(text)) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(line);
        } catch {
          continue;
        }
        const error = errorOf(parsed);
        if (error) {
          context.sink({ type: "error", seq: undefined, error });
          ended = true;
          return false;
        }
        const facts = chunkFacts(parsed);
        if (!facts.usageTrailer) position += 1;
        finishReason = facts.finishReason ?? finishReason;
        usage = facts.usage ?? usage;
        context.sink({ type: "chunk", seq: position, chunk: parsed });
      }
      return !isDropped();
    });
  } catch (error) {
    if (!isDropped()) context.sink({ type: "reconnect", reason: `the connection broke (${(error as Error).message})`, retryMs: undefined });
    return;
  }
  if (ended || isDropped()) return;
  // NDJSON has no [DONE]: a body that ends after the finish chunk is a complete stream.
  if (finishReason !== undefined) context.sink({ type: "done", seq: undefined, finishReason, usage });
  else context.sink({ type: "reconnect", reason: "the server ended the connection before the stream", retryMs: undefined });
}

export const ndjsonTransport: Transport = {
  id: "ndjson",
  label: "NDJSON",
  available: true,
  note: "POST /v1/chat/completions with Accept: application/x-ndjson; positions are counted (one chunk per event); resumes over SSE",
  resumesOver: "sse",
  open(body, context) {
    return connection(context, async (guarded, signal, isDropped) => {
      const response = await post(body, guarded, "application/x-ndjson", signal);
      if (response) await pumpNdjson(response, guarded, isDropped);
    });
  },
  resume(stream, after, context) {
    return connection(context, (guarded, signal, isDropped) => resumeSse(stream, after, guarded, signal, isDropped));
  },
};
