/**
 * Replays provider streams taken from the providers' documentation
 * (test/fixtures/providers, sources in its README) through each adapter
 * from a local HTTP server, and asserts the exact normalised events.
 * Each body is served whole and in 5-byte pieces (SSE lines and UTF-8
 * characters split across reads); both must give the same events.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { describe, test } from "node:test";
import { type EventBody, FinishReason, type RunnelError } from "@runnel/shared";
import { createAnthropicAdapter } from "./anthropic.js";
import { createGeminiAdapter } from "./gemini.js";
import { ProviderError } from "./http.js";
import { createOpenAIAdapter } from "./openai.js";
import { BOUNDED, type Handler, rejection, runAdapter, upstream } from "./test-support.js";
import type { ProviderAdapter } from "./types.js";

const FIXTURES = new URL("../../../../test/fixtures/providers/", import.meta.url);

function fixture(name: string): string {
  return readFileSync(new URL(name, FIXTURES), "utf8");
}

type Serving = "whole" | "5-byte pieces" | "CRLF";

function serve(body: string, how: Serving): Handler {
  return (_request, response: ServerResponse) => {
    response.writeHead(200, { "content-type": "text/event-stream" });
    if (how === "whole") {
      response.end(body);
      return;
    }
    const bytes = Buffer.from(how === "CRLF" ? body.replace(/\n/g, "\r\n") : body, "utf8");
    let offset = 0;
    const next = () => {
      if (offset >= bytes.length) {
        response.end();
        return;
      }
      response.write(bytes.subarray(offset, offset + 5));
      offset += 5;
      setImmediate(next);
    };
    next();
  };
}

type Kind = "anthropic" | "gemini" | "openai";

function adapterFor(kind: Kind, up: Awaited<ReturnType<typeof upstream>>): ProviderAdapter {
  const options = { agents: up.agents };
  if (kind === "anthropic") return createAnthropicAdapter(options);
  if (kind === "gemini") return createGeminiAdapter(options);
  return createOpenAIAdapter(options);
}

const started = (model: string): EventBody => ({ $case: "started", value: { provider: "p", model, attempt: 1 } });
const text = (value: string): EventBody => ({ $case: "textDelta", value: { text: value } });
const reasoning = (value: string): EventBody => ({ $case: "reasoningDelta", value: { text: value } });
const tool = (index: number, id: string, name: string, args: string): EventBody => ({ $case: "toolCallDelta", value: { index, id, name, arguments: args } });
const usage = (inputTokens: number, outputTokens: number, cachedInputTokens = 0, reasoningTokens = 0): EventBody => ({
  $case: "usage",
  value: { inputTokens, outputTokens, cachedInputTokens, reasoningTokens },
});
const done = (finishReason: FinishReason): EventBody => ({ $case: "done", value: { finishReason } });

async function replayFixture(t: { after(fn: () => Promise<void> | void): void }, kind: Kind, name: string, how: Serving) {
  const up = await upstream(t, serve(fixture(name), how));
  const run = runAdapter(adapterFor(kind, up), up, { model: "served-model" });
  return { up, run };
}

const SERVINGS: readonly Serving[] = ["whole", "5-byte pieces"];

describe("replayed Anthropic streams", () => {
  for (const how of SERVINGS) {
    test(`the docs' basic text stream (${how})`, BOUNDED, async (t) => {
      const { up, run } = await replayFixture(t, "anthropic", "anthropic-text.sse", how);
      await run.result;
      assert.deepEqual(run.events, [started("served-model"), text("Hello"), text("!"), usage(25, 15), done(FinishReason.FINISH_REASON_STOP)]);
      assert.equal(up.seen[0]?.url, "/v1/messages");
    });

    test(`the docs' tool use stream: text, then one tool call whose fragments join to its input (${how})`, BOUNDED, async (t) => {
      const { run } = await replayFixture(t, "anthropic", "anthropic-tool-use.sse", how);
      await run.result;
      const words = ["Okay", ",", " let", "'s", " check", " the", " weather", " for", " San", " Francisco", ",", " CA", ":"];
      const fragments = ['{"location":', ' "San', " Francisc", "o,", ' CA"', ", ", '"unit": "fah', 'renheit"}'];
      assert.deepEqual(run.events, [
        started("served-model"),
        ...words.map(text),
        tool(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", ""),
        ...fragments.map((fragment) => tool(0, "", "", fragment)),
        usage(472, 89),
        done(FinishReason.FINISH_REASON_TOOL_CALLS),
      ]);
      assert.deepEqual(JSON.parse(fragments.join("")), { location: "San Francisco, CA", unit: "fahrenheit" });
    });

    test(`the docs' extended thinking stream: reasoning, then text, no usage when none is sent (${how})`, BOUNDED, async (t) => {
      const { run } = await replayFixture(t, "anthropic", "anthropic-thinking.sse", how);
      await run.result;
      assert.deepEqual(run.events, [
        started("served-model"),
        reasoning("I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n1071 = 2 × 462 + 147"),
        reasoning("\n462 = 3 × 147 + 21\n147 = 7 × 21 + 0\n\nSo GCD(1071, 462) = 21"),
        text("The greatest common divisor of 1071 and 462 is **21**."),
        done(FinishReason.FINISH_REASON_STOP),
      ]);
    });
  }

  test("an overloaded_error event before any token fails the attempt as retryable UNAVAILABLE", BOUNDED, async (t) => {
    const { run } = await replayFixture(t, "anthropic", "anthropic-overloaded.sse", "whole");
    const error: RunnelError = await rejection(run.result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.match(error.message, /overloaded_error: Overloaded/);
    assert.ok(error instanceof ProviderError && error.retry, "another attempt may help");
    assert.deepEqual(
      run.events.map((event) => event.$case),
      ["started"],
    );
  });
});

describe("replayed OpenAI streams", () => {
  for (const how of SERVINGS) {
    test(`the API reference's chunk example (${how})`, BOUNDED, async (t) => {
      const { up, run } = await replayFixture(t, "openai", "openai-text.sse", how);
      await run.result;
      assert.deepEqual(run.events, [started("served-model"), text("Hello"), done(FinishReason.FINISH_REASON_STOP)]);
      assert.equal(up.seen[0]?.url, "/chat/completions");
    });

    test(`the function calling guide's streamed tool call, with usage (${how})`, BOUNDED, async (t) => {
      const { run } = await replayFixture(t, "openai", "openai-tool-calls.sse", how);
      await run.result;
      const fragments = ['{"', "location", '":"', "Paris", ",", " France", '"}'];
      assert.deepEqual(run.events, [
        started("served-model"),
        tool(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", ""),
        ...fragments.map((fragment) => tool(0, "", "", fragment)),
        usage(82, 17),
        done(FinishReason.FINISH_REASON_TOOL_CALLS),
      ]);
      assert.deepEqual(JSON.parse(fragments.join("")), { location: "Paris, France" });
    });
  }
});

describe("replayed Gemini streams", () => {
  for (const how of [...SERVINGS, "CRLF"] as const) {
    test(`text in three events, usage from the last (${how})`, BOUNDED, async (t) => {
      const { up, run } = await replayFixture(t, "gemini", "gemini-text.sse", how);
      await run.result;
      assert.deepEqual(run.events, [
        started("served-model"),
        text("AI"),
        text(" systems learn patterns from large amounts of data"),
        text(" and use them to make predictions.\n"),
        usage(4, 15),
        done(FinishReason.FINISH_REASON_STOP),
      ]);
      assert.equal(up.seen[0]?.url, "/models/served-model:streamGenerateContent?alt=sse");
    });

    test(`a function call becomes one complete tool call and finish reason tool_calls (${how})`, BOUNDED, async (t) => {
      const { run } = await replayFixture(t, "gemini", "gemini-function-call.sse", how);
      await run.result;
      assert.equal(run.events.length, 4);
      const call = run.events[1];
      assert.ok(call?.$case === "toolCallDelta");
      assert.match(call.value.id, /^call_[A-Za-z0-9_-]{16}$/);
      assert.deepEqual(run.events, [
        started("served-model"),
        tool(0, call.value.id, "set_light_values", '{"brightness":25,"color_temp":"warm"}'),
        usage(77, 11),
        done(FinishReason.FINISH_REASON_TOOL_CALLS),
      ]);
    });

    test(`thought parts are reasoning; thoughts count as output and reasoning tokens (${how})`, BOUNDED, async (t) => {
      const { run } = await replayFixture(t, "gemini", "gemini-thinking.sse", how);
      await run.result;
      assert.deepEqual(run.events, [
        started("served-model"),
        reasoning("**Adding the numbers**\n\nThe user asks for 2 + 2; that is 4."),
        text("2 + 2 = 4"),
        usage(12, 108, 0, 101),
        done(FinishReason.FINISH_REASON_STOP),
      ]);
    });
  }

  test("a blocked prompt ends honestly with content_filter", BOUNDED, async (t) => {
    const { run } = await replayFixture(t, "gemini", "gemini-prompt-blocked.sse", "whole");
    await run.result;
    assert.deepEqual(run.events, [started("served-model"), usage(8, 0), done(FinishReason.FINISH_REASON_CONTENT_FILTER)]);
  });
});
