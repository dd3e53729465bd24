/**
 * Plays out a chat completion, streamed or not, with the scenario's timing
 * and its stream-level failures (stall, cut, malformed, no-done).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { type Exchange, markHeadersSent, send, write } from "./exchange.js";
import {
  type ChatRequest,
  type CompletionHeader,
  chunkEvent,
  completionBody,
  DONE_EVENT,
  type FinishReason,
  MALFORMED_EVENT,
  usage,
  usageEvent,
} from "./openai.js";
import type { Scenario } from "./scenario.js";
import { mockText, tokenGenerator } from "./text.js";

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
 * Streams the completion as OpenAI server-sent events: the role chunk at
 * once, the first content token after ttft, then one token every itl, the
 * finish chunk, the usage chunk when asked for, and `data: [DONE]`.
 * Rejects with an AbortError if the connection closes first.
 */
export async function streamCompletion(exchange: Exchange, chat: ChatRequest, scenario: Scenario, header: CompletionHeader): Promise<void> {
  const { request, response, signal } = exchange;
  const plan = planCompletion(chat, scenario);
  request.socket.setNoDelay(true);
  response.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-request-id": header.id });
  response.flushHeaders();
  markHeadersSent(exchange, 200);
  await write(exchange, chunkEvent(header, { role: "assistant", content: "" }, null));
  if (scenario.ttftMs > 0) await sleep(scenario.ttftMs, undefined, { signal });

  const tokens = tokenGenerator(scenario.seed);
  for (let index = 0; index <= plan.count; index++) {
    if (index === plan.failAt) {
      if (scenario.fail === "stall") return; // Silence; the connection stays open until the peer or close() ends it.
      if (scenario.fail === "cut") {
        exchange.destroy("close");
        return;
      }
      if (scenario.fail === "malformed") await write(exchange, MALFORMED_EVENT);
    }
    if (index === plan.count) break;
    if (index > 0 && scenario.itlMs > 0) await sleep(scenario.itlMs, undefined, { signal });
    await write(exchange, chunkEvent(header, { content: tokens.next().value }, null));
    recordTokens(exchange, index + 1);
  }

  await write(exchange, chunkEvent(header, {}, plan.finishReason));
  if (chat.includeUsage || scenario.usage === "always") await write(exchange, usageEvent(header, usage(chat.promptTokens, plan.count)));
  if (scenario.fail !== "no-done") await write(exchange, DONE_EVENT);
  response.end();
}

/**
 * Answers with one `chat.completion` object after ttft + tokens × itl.
 * Stream-level failures have non-stream counterparts: `stall` never answers,
 * `cut` sends the headers and half the body then closes the connection,
 * `malformed` sends a body that is not JSON; `no-done` answers normally.
 */
export async function completeOnce(exchange: Exchange, chat: ChatRequest, scenario: Scenario, header: CompletionHeader): Promise<void> {
  const { response, signal } = exchange;
  const plan = planCompletion(chat, scenario);
  const failsEarly = scenario.fail === "stall" || scenario.fail === "cut";
  const tokens = failsEarly ? plan.failAt : plan.count;
  const delayMs = scenario.ttftMs + tokens * scenario.itlMs;
  if (delayMs > 0) await sleep(delayMs, undefined, { signal });

  if (scenario.fail === "stall") return;
  if (scenario.fail === "malformed") {
    send(exchange, 200, MALFORMED_EVENT.slice("data: ".length).trim());
    return;
  }
  const body = completionBody(header, mockText(plan.count, scenario.seed), plan.finishReason, usage(chat.promptTokens, plan.count));
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
