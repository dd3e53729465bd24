import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { chat, startMock } from "./test-support.js";
import { mockText } from "./text.js";

interface NamedEvent {
  event: string | undefined;
  data: string;
}

/** Splits an SSE body into events with their `event:` names. */
function events(raw: string): NamedEvent[] {
  return raw
    .split("\n\n")
    .filter((block) => block.trim() !== "")
    .map((block) => {
      let event: string | undefined;
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      return { event, data: data.join("\n") };
    });
}

interface ResponsesEvent {
  type: string;
  sequence_number: number;
  [field: string]: unknown;
}

/** Parses every event, checking that each names its type and that the numbers run 0, 1, 2, … */
function parsed(raw: string): ResponsesEvent[] {
  const list = events(raw).map((item) => {
    const data = JSON.parse(item.data) as ResponsesEvent;
    assert.equal(data.type, item.event, "the data's type names the event");
    return data;
  });
  assert.deepEqual(
    list.map((event) => event.sequence_number),
    list.map((_, index) => index),
  );
  return list;
}

function responses(url: string, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}/v1/responses`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ input: "say something nice", ...body }),
  });
}

interface Journaled {
  id: string;
  format: string;
  model: string;
  authorization: boolean;
  fail: string | null;
  status: number | null;
  tokensSent: number;
  messages: { role: string; text: string }[];
}

async function journal(url: string): Promise<Journaled[]> {
  return ((await (await fetch(`${url}/_mock/requests`)).json()) as { requests: Journaled[] }).requests;
}

interface ResponseObject {
  id: string;
  object: string;
  status: string;
  model: string;
  incomplete_details: { reason: string } | null;
  error: { code: string; message: string } | null;
  output: { id: string; type: string; status: string; role: string; content: { type: string; text: string }[] }[];
  usage: {
    input_tokens: number;
    input_tokens_details: { cached_tokens: number };
    output_tokens: number;
    output_tokens_details: { reasoning_tokens: number };
    total_tokens: number;
  } | null;
}

describe("the OpenAI Responses format at /v1/responses", () => {
  test("streams OpenAI's event sequence, numbered from 0, with the scenario's exact text and usage", async (t) => {
    const { url } = await startMock(t);
    const response = await responses(url, { model: "mock?tokens=6&seed=3", stream: true }, { authorization: "Bearer sk-secret" });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    const list = parsed(await response.text());
    assert.deepEqual(
      list.map((event) => event.type),
      [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        ...Array(6).fill("response.output_text.delta"),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
      ],
    );
    const created = list[0]?.response as ResponseObject;
    assert.match(created.id, /^resp_mock_\d+$/);
    assert.equal(created.object, "response");
    assert.equal(created.status, "in_progress");
    assert.equal(created.model, "mock?tokens=6&seed=3");
    assert.deepEqual(created.output, []);
    const itemId = created.id.replace("resp_", "msg_");
    const deltas = list.filter((event) => event.type === "response.output_text.delta");
    for (const delta of deltas) {
      assert.deepEqual(Object.keys(delta), ["type", "sequence_number", "item_id", "output_index", "content_index", "delta", "logprobs"]);
      assert.equal(delta.item_id, itemId);
    }
    const text = deltas.map((event) => event.delta).join("");
    assert.equal(text, mockText(6, 3));
    assert.equal(list.find((event) => event.type === "response.output_text.done")?.text, text);
    const completed = list.at(-1)?.response as ResponseObject;
    assert.equal(completed.status, "completed");
    assert.deepEqual(completed.output, [
      { id: itemId, type: "message", status: "completed", content: [{ type: "output_text", annotations: [], logprobs: [], text }], role: "assistant" },
    ]);
    assert.deepEqual(completed.usage, {
      input_tokens: 3,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 6,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: 9,
    });
    const [seen] = await journal(url);
    assert.equal(seen?.format, "openai-responses");
    assert.equal(seen?.id, created.id);
    assert.equal(seen?.authorization, true);
    assert.equal(seen?.tokensSent, 6);
    assert.equal(JSON.stringify(await journal(url)).includes("sk-secret"), false);
  });

  test("max_output_tokens below the answer's length ends with response.incomplete; without stream, one Response object", async (t) => {
    const { url } = await startMock(t);
    const list = parsed(await (await responses(url, { model: "mock?tokens=10", stream: true, max_output_tokens: 4 })).text());
    assert.equal(list.at(-1)?.type, "response.incomplete");
    const incomplete = list.at(-1)?.response as ResponseObject;
    assert.equal(incomplete.status, "incomplete");
    assert.deepEqual(incomplete.incomplete_details, { reason: "max_output_tokens" });
    assert.equal(incomplete.output[0]?.status, "incomplete");
    assert.equal(incomplete.usage?.output_tokens, 4);

    const whole = (await (await responses(url, { model: "mock?tokens=5" })).json()) as ResponseObject;
    assert.equal(whole.object, "response");
    assert.equal(whole.status, "completed");
    assert.equal(whole.output[0]?.content[0]?.text, mockText(5));
    assert.equal(whole.usage?.output_tokens, 5);
  });

  test("input items are journaled by role or item type; instructions count in the prompt but are not a turn", async (t) => {
    const { url } = await startMock(t);
    const body = {
      model: "mock?tokens=2",
      instructions: "Be brief now.",
      input: [
        { role: "user", content: "Weather in Paris?" },
        { type: "function_call", call_id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' },
        { type: "function_call_output", call_id: "call_1", output: "21C" },
        {
          type: "message",
          role: "user",
          content: [
            { type: "input_text", text: "Thanks, " },
            { type: "input_text", text: "and Rome?" },
          ],
        },
      ],
      stream: true,
    };
    const list = parsed(await (await responses(url, body)).text());
    // Words: instructions 3, then 3, 1 (the arguments), 1 (the output) and 3.
    assert.equal((list.at(-1)?.response as ResponseObject | undefined)?.usage?.input_tokens, 3 + 3 + 1 + 1 + 3);
    const [seen] = await journal(url);
    assert.deepEqual(seen?.messages, [
      { role: "user", text: "Weather in Paris?" },
      { role: "function_call", text: '{"city":"Paris"}' },
      { role: "function_call_output", text: "21C" },
      { role: "user", text: "Thanks, and Rome?" },
    ]);
  });

  test("a request without input, with a bad item or a bad max_output_tokens is a 400 in OpenAI's shape, naming the param", async (t) => {
    const { url } = await startMock(t);
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ model: "mock", input: undefined }, "input"],
      [{ model: "mock", input: [{ type: "item_reference", id: "x" }] }, "input[0]"],
      [{ model: "mock", max_output_tokens: 0 }, "max_output_tokens"],
      [{ model: "" }, "model"],
      [{ model: "mock?fail=nope" }, "model"],
    ];
    for (const [body, param] of cases) {
      const response = await responses(url, body);
      assert.equal(response.status, 400, param);
      const error = ((await response.json()) as { error: { type: string; param: string } }).error;
      assert.equal(error.type, "invalid_request_error");
      assert.equal(error.param, param);
    }
  });

  test("HTTP failures in OpenAI's shape: 429 with Retry-After, 500, 503, context length, content policy, a bad key", async (t) => {
    const { url } = await startMock(t);
    const cases: Array<[string, number, string | null, RegExp]> = [
      ["mock?fail=429&retry_after=4", 429, "rate_limit_exceeded", /Rate limit reached/],
      ["mock?fail=500", 500, null, /The server had an error/],
      ["mock?fail=503", 503, null, /overloaded/],
      ["mock?fail=context-length", 400, "context_length_exceeded", /maximum context length is 8192/],
      ["mock?fail=content-policy", 400, "content_policy_violation", /safety system/],
      ["mock?fail=auth", 401, "invalid_api_key", /Incorrect API key/],
    ];
    for (const [model, status, code, message] of cases) {
      const response = await responses(url, { model, stream: true });
      assert.equal(response.status, status, model);
      const error = ((await response.json()) as { error: { code: string | null; message: string } }).error;
      assert.equal(error.code, code, model);
      assert.match(error.message, message, model);
      assert.equal(response.headers.get("retry-after"), model.includes("retry_after") ? "4" : null, model);
    }
  });

  test("stream-error: `after` tokens, then response.failed with OpenAI's error, and the body ends", async (t) => {
    const { url } = await startMock(t);
    const list = parsed(await (await responses(url, { model: "mock?fail=stream-error&after=2&tokens=5", stream: true })).text());
    assert.deepEqual(
      list.map((event) => event.type),
      [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.failed",
      ],
    );
    const failed = list.at(-1)?.response as ResponseObject;
    assert.equal(failed.status, "failed");
    assert.deepEqual(failed.error, { code: "server_error", message: "The model failed to generate a response." });
    const whole = await responses(url, { model: "mock?fail=stream-error" });
    assert.equal(whole.status, 500);
  });

  test("cut and malformed work in this format too", async (t) => {
    const { url } = await startMock(t);
    const cut = await responses(url, { model: "mock?fail=cut&after=1", stream: true });
    assert.equal(cut.status, 200);
    await assert.rejects(cut.text());
    const malformed = events(await (await responses(url, { model: "mock?fail=malformed&tokens=3&after=1", stream: true })).text());
    assert.equal(malformed.filter((item) => item.data === "{not json").length, 1);
    assert.equal(malformed.at(-1)?.event, "response.completed");
  });

  test("no-prefill refuses an input ending with an assistant message", async (t) => {
    const { url } = await startMock(t);
    const refused = await responses(url, {
      model: "mock?fail=no-prefill",
      input: [
        { role: "user", content: "Name a colour." },
        { role: "assistant", content: "The colour is" },
      ],
    });
    assert.equal(refused.status, 400);
    assert.match(((await refused.json()) as { error: { message: string } }).error.message, /does not support assistant message prefill/);
  });
});

describe("stream-error in the other formats", () => {
  test("OpenAI chat completions: an error chunk, then the end: no finish chunk, no [DONE]", async (t) => {
    const { url } = await startMock(t);
    const raw = await (await chat(url, { model: "mock?fail=stream-error&after=1&tokens=4", stream: true })).text();
    const data = events(raw).map((item) => item.data);
    assert.equal(data.length, 3);
    assert.deepEqual(JSON.parse(data.at(-1) ?? "{}"), {
      error: { message: "The server had an error while processing your request. Sorry about that!", type: "server_error", param: null, code: null },
    });
    assert.equal(raw.includes("[DONE]"), false);
  });

  test("Anthropic: the overloaded_error event, never a message_stop", async (t) => {
    const { url } = await startMock(t);
    const response = await fetch(`${url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "mock?fail=stream-error&after=0", max_tokens: 10, stream: true, messages: [{ role: "user", content: "hi" }] }),
    });
    const list = events(await response.text());
    assert.deepEqual(
      list.map((item) => item.event),
      ["message_start", "content_block_start", "ping", "error"],
    );
    assert.deepEqual(JSON.parse(list.at(-1)?.data ?? "{}"), { type: "error", error: { type: "overloaded_error", message: "Overloaded" } });
  });

  test("Gemini: an error object where a response would be", async (t) => {
    const { url } = await startMock(t);
    const response = await fetch(`${url}/v1beta/models/${encodeURIComponent("mock?fail=stream-error&after=1")}:streamGenerateContent?alt=sse`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ contents: [{ role: "user", parts: [{ text: "hi" }] }] }),
    });
    const list = (await response.text()).split("\r\n\r\n").filter((block) => block !== "");
    assert.equal(list.length, 2);
    assert.deepEqual(JSON.parse(list.at(-1)?.slice("data: ".length) ?? "{}"), {
      error: { code: 503, message: "The model is overloaded. Please try again later.", status: "UNAVAILABLE" },
    });
  });
});
