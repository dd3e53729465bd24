/**
 * Plays out a chat completion, streamed or not, with the scenario's timing
 * and its stream-level failures (stall, cut, malformed, stream-error, no-done).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { type Exchange, markHeadersSent, send, write } from "./exchange.js";
import { type ChatRequest, type CompletionHeader, type FinishReason, prefillOf } from "./openai.js";
import type { Scenario } from "./scenario.js";
import { tokenGenerator } from "./text.js";
import type { MockWire } from "./wire.js";

/** What a completion will contain once the request's limits are applied. */
export interface CompletionPlan {
  /** Content tokens of a complete answer. */
  readonly count: number;
  readonly finishReason: FinishReason;
  /** Token index of a mid-stream failure: it happens before token `failAt` (before the finish chunk when failAt = count). */
  readonly failAt: number;
  /** Tokens of the scenario's text the prefill already holds: the answer starts after them (0 without a prefill). */
  readonly skip: number;
}

/**
 * How many whole tokens of the scenario's text `prefill` is; null when it is
 * not exactly the start of that text (a prefill holding all of it is all its tokens).
 */
export function prefillTokens(prefill: string, scenario: Scenario): number | null {
  if (prefill === "") return null;
  const tokens = tokenGenerator(scenario.seed);
  let text = "";
  for (let count = 1; count <= scenario.tokens; count++) {
    text += tokens.next().value;
    if (text === prefill) return count;
    if (text.length >= prefill.length || !prefill.startsWith(text)) return null;
  }
  return null;
}

/**
 * Applies a prefill and `max_tokens` to the scenario. A prefill that is the
 * start of the scenario's text is continued where it stops, as a model
 * continues a prefill: the answer is the rest of the text. `after` counts
 * the tokens of this answer.
 */
export function planCompletion(chat: ChatRequest, scenario: Scenario): CompletionPlan {
  const prefill = prefillOf(chat);
  const skip = prefill === null ? 0 : (prefillTokens(prefill, scenario) ?? 0);
  const rest = scenario.tokens - skip;
  const truncated = chat.maxTokens !== null && chat.maxTokens < rest;
  const count = truncated && chat.maxTokens !== null ? chat.maxTokens : rest;
  return { count, finishReason: truncated ? "length" : "stop", failAt: Math.min(scenario.after, count), skip };
}

/** The text of the plan's answer: `count` tokens of the scenario's text after the `skip` the prefill holds. */
export function answerText(plan: CompletionPlan, scenario: Scenario): string {
  const tokens = tokenGenerator(scenario.seed);
  for (let index = 0; index < plan.skip; index++) tokens.next();
  let text = "";
  for (let index = 0; index < plan.count; index++) text += tokens.next().value;
  return text;
}

function recordTokens(exchange: Exchange, tokens: number): void {
  if (!exchange.entry) return;
  exchange.entry.tokensSent = tokens;
  if (tokens > 0) exchange.entry.firstTokenAt ??= Date.now();
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
  for (let index = 0; index < plan.skip; index++) tokens.next();
  for (let index = 0; index <= plan.count; index++) {
    if (index === plan.failAt) {
      if (scenario.fail === "stall") return; // Silence; the connection stays open until the peer or close() ends it.
      if (scenario.fail === "cut") {
        exchange.destroy("close");
        return;
      }
      if (scenario.fail === "malformed") await write(exchange, wire.malformed);
      if (scenario.fail === "stream-error") {
        // The provider's own error event, then the end of the body: nothing after it.
        await write(exchange, wire.streamError(header, chat));
        response.end();
        return;
      }
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
 * `malformed` sends a body that is not JSON, `stream-error` answers the
 * format's 500; `no-done` answers normally.
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
  if (scenario.fail === "stream-error") {
    const error = wire.internalError();
    send(exchange, error.status, error.body, error.headers);
    return;
  }
  const body = wire.completion(header, chat, answerText(plan, scenario), plan);
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
