/**
 * Plays out a chat completion, streamed or not, with the scenario's timing
 * and its stream-level failures (stall, cut, malformed, no-done).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { type Exchange, markHeadersSent, send, write } from "./exchange.js";
import type { ChatRequest, CompletionHeader, FinishReason } from "./openai.js";
import type { Scenario } from "./scenario.js";
import { mockText, tokenGenerator } from "./text.js";
import type { MockWire } from "./wire.js";

/** What a completion will contain once the request's limits are applied. */
export interface CompletionPlan {
  /** Content tokens of a complete answer. */
  readonly count: number;
  readonly finishReason: FinishReason;
  /** Token index of a mid-stream failure: it happens before token `failAt` (before the finish chunk when failAt = count). */
  readonly failAt: number;
}

/** Applies `max_tokens` to the scenario. */
export function planCompletion(chat: ChatRequest, scenario: Scenario): CompletionPlan {
  const truncated = chat.maxTokens !== null && chat.maxTokens < scenario.tokens;
  const count = truncated && chat.maxTokens !== null ? chat.maxTokens : scenario.tokens;
  return { count, finishReason: truncated ? "length" : "stop", failAt: Math.min(scenario.after, count) };
}

function recordTokens(exchange: Exchange, tokens: number): void {
  if (!exchange.entry) return;
  exchange.entry.tokensSent = tokens;
  exchange.journal.changed(exchange.entry);
}

/**
 * Streams the completion in the wire format: what the format sends before
 * the first token at once, the first content token after ttft, then one
 * token every itl, the finish (with usage when the format sends it, or the
 * OpenAI request asked for it), and the end marker.
 * Rejects with an AbortError if the connection closes first.
 */
export async function streamCompletion(exchange: Exchange, chat: ChatRequest, scenario: Scenario, header: CompletionHeader, wire: MockWire): Promise<void> {
  const { request, response, signal } = exchange;
  const plan = planCompletion(chat, scenario);
  request.socket.setNoDelay(true);
  response.writeHead(200, { "content-type": wire.streamContentType, "cache-control": "no-cache", "x-request-id": header.id });
  response.flushHeaders();
  markHeadersSent(exchange, 200);
  const start = wire.streamStart(header, chat);
  if (start) await write(exchange, start);
  if (scenario.ttftMs > 0) await sleep(scenario.ttftMs, undefined, { signal });

  const tokens = tokenGenerator(scenario.seed);
  for (let index = 0; index <= plan.count; index++) {
    if (index === plan.failAt) {
      if (scenario.fail === "stall") return; // Silence; the connection stays open until the peer or close() ends it.
      if (scenario.fail === "cut") {
        exchange.destroy("close");
        return;
      }
      if (scenario.fail === "malformed") await write(exchange, wire.malformed);
    }
    if (index === plan.count) break;
    if (index > 0 && scenario.itlMs > 0) await sleep(scenario.itlMs, undefined, { signal });
    await write(exchange, wire.token(header, chat, tokens.next().value));
    recordTokens(exchange, index + 1);
  }

  await write(exchange, wire.finish(header, chat, plan, chat.includeUsage || scenario.usage === "always"));
  const end = wire.end(header);
  if (end && scenario.fail !== "no-done") await write(exchange, end);
  response.end();
}

/**
 * Answers with one completion object after ttft + tokens × itl.
 * Stream-level failures have non-stream counterparts: `stall` never answers,
 * `cut` sends the headers and half the body then closes the connection,
 * `malformed` sends a body that is not JSON; `no-done` answers normally.
 */
export async function completeOnce(exchange: Exchange, chat: ChatRequest, scenario: Scenario, header: CompletionHeader, wire: MockWire): Promise<void> {
  const { response, signal } = exchange;
  const plan = planCompletion(chat, scenario);
  const failsEarly = scenario.fail === "stall" || scenario.fail === "cut";
  const tokens = failsEarly ? plan.failAt : plan.count;
  const delayMs = scenario.ttftMs + tokens * scenario.itlMs;
  if (delayMs > 0) await sleep(delayMs, undefined, { signal });

  if (scenario.fail === "stall") return;
  if (scenario.fail === "malformed") {
    send(exchange, 200, "{not json");
    return;
  }
  const body = wire.completion(header, chat, mockText(plan.count, scenario.seed), plan);
  if (scenario.fail === "cut") {
    response.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body), "x-request-id": header.id });
    markHeadersSent(exchange, 200);
    response.write(body.slice(0, Math.floor(body.length / 2)));
    recordTokens(exchange, tokens);
    exchange.destroy("close");
    return;
  }
  recordTokens(exchange, plan.count);
  send(exchange, 200, body, { "x-request-id": header.id });
}
