/**
 * What the mock offers tests of a gateway's failover: outages switched on and
 * off at runtime (`fail=outage`), prefills continued where they stop, and a
 * journal that shows the conversation each request carried and when its
 * first token went out.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { answerText, planCompletion, prefillTokens } from "./completion.js";
import type { ChatRequest } from "./openai.js";
import { parseScenario } from "./scenario.js";
import { chat, chunks, contentOf, SseReader, startMock } from "./test-support.js";
import { mockText, mockTokens } from "./text.js";

const outageUrl = (url: string, key: string) => `${url}/_mock/outages/${encodeURIComponent(key)}`;

async function outages(url: string): Promise<string[]> {
  const response = await fetch(`${url}/_mock/outages`);
  assert.equal(response.status, 200);
  return ((await response.json()) as { outages: string[] }).outages;
}

function request(messages: ChatRequest["messages"], extra: Partial<ChatRequest> = {}): ChatRequest {
  return {
    model: "mock",
    stream: true,
    includeUsage: false,
    maxTokens: null,
    promptTokens: 0,
    endsWithAssistant: messages.at(-1)?.role === "assistant",
    messages,
    ...extra,
  };
}

describe("fail=outage", () => {
  test("answers normally while its outage is off, 503 while it is on, normally again once it ends", async (t) => {
    const { url, app } = await startMock(t);
    const model = "mock?fail=outage&key=primary&tokens=3&seed=4";
    const before = await chat(url, { model, stream: true });
    assert.equal(before.status, 200);
    assert.equal(contentOf(chunks(await new SseReader(before).rest())), mockText(3, 4));

    const on = await fetch(outageUrl(url, "primary"), { method: "PUT" });
    assert.equal(on.status, 204);
    assert.deepEqual(await outages(url), ["primary"]);
    for (const stream of [true, false]) {
      const during = await chat(url, { model, stream });
      assert.equal(during.status, 503);
      const body = (await during.json()) as { error: { type: string } };
      assert.equal(body.error.type, "server_error");
    }
    const otherKey = await chat(url, { model: "mock?fail=outage&key=other&tokens=1" });
    assert.equal(otherKey.status, 200, "an outage is per key");
    await otherKey.body?.cancel();

    assert.equal((await fetch(outageUrl(url, "primary"), { method: "DELETE" })).status, 204);
    assert.deepEqual(await outages(url), []);
    const after = await chat(url, { model, stream: true });
    assert.equal(after.status, 200);
    assert.equal(contentOf(chunks(await new SseReader(after).rest())), mockText(3, 4));

    assert.deepEqual(
      app.journal.entries().map((entry) => [entry.fail, entry.status]),
      [
        ["outage", 200],
        ["outage", 503],
        ["outage", 503],
        ["outage", 200],
        ["outage", 200],
      ],
    );
  });

  test("switches are idempotent, can be flipped in process, and DELETE /_mock/outages ends them all", async (t) => {
    const { url, app } = await startMock(t);
    for (let index = 0; index < 2; index++) assert.equal((await fetch(outageUrl(url, "a b/c?"), { method: "PUT" })).status, 204);
    app.outages.add("in-process");
    assert.deepEqual((await outages(url)).sort(), ["a b/c?", "in-process"].sort());
    const during = await chat(url, { model: `mock?fail=outage&key=${encodeURIComponent("a b/c?")}` });
    assert.equal(during.status, 503, "a key with reserved characters works when escaped in both places");
    await during.body?.cancel();
    assert.equal((await fetch(outageUrl(url, "never-on"), { method: "DELETE" })).status, 204);
    assert.equal((await fetch(`${url}/_mock/outages`, { method: "DELETE" })).status, 204);
    assert.deepEqual(await outages(url), []);
    assert.equal(app.outages.size, 0);
  });

  test("each format answers an outage with its own overloaded error", async (t) => {
    const { url } = await startMock(t);
    await fetch(outageUrl(url, "k"), { method: "PUT" });
    const anthropic = await fetch(`${url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "mock?fail=outage&key=k", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(anthropic.status, 529);
    assert.equal(((await anthropic.json()) as { error: { type: string } }).error.type, "overloaded_error");
    const gemini = await fetch(`${url}/v1beta/models/${encodeURIComponent("mock?fail=outage&key=k")}:generateContent`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ contents: [{ role: "user", parts: [{ text: "hi" }] }] }),
    });
    assert.equal(gemini.status, 503);
    assert.equal(((await gemini.json()) as { error: { status: string } }).error.status, "UNAVAILABLE");
  });

  test("a bad key or method is refused; fail=outage without a key is a 400", async (t) => {
    const { url } = await startMock(t);
    assert.equal((await fetch(`${url}/_mock/outages/`, { method: "PUT" })).status, 400);
    assert.equal((await fetch(`${url}/_mock/outages/${"k".repeat(257)}`, { method: "PUT" })).status, 400);
    assert.equal((await fetch(`${url}/_mock/outages/a/b`, { method: "PUT" })).status, 400);
    const wrongMethod = await fetch(outageUrl(url, "k"), { method: "POST" });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get("allow"), "PUT, DELETE");
    assert.equal((await fetch(`${url}/_mock/outages`, { method: "PUT" })).status, 405);
    const noKey = await chat(url, { model: "mock?fail=outage" });
    assert.equal(noKey.status, 400);
    assert.match(((await noKey.json()) as { error: { message: string } }).error.message, /fail=outage needs key=/);
  });
});

describe("prefill continuation", () => {
  test("prefillTokens counts whole tokens of the scenario's text, and nothing else", () => {
    const scenario = parseScenario("mock?tokens=10&seed=3");
    const tokens = mockTokens(10, 3);
    assert.equal(prefillTokens(mockText(4, 3), scenario), 4);
    assert.equal(prefillTokens(mockText(10, 3), scenario), 10, "all of it");
    assert.equal(prefillTokens(`${mockText(4, 3)} `, scenario), null, "not at a token boundary");
    assert.equal(prefillTokens(mockText(4, 3) + (tokens[4] ?? "").slice(0, 2), scenario), null, "half a token");
    assert.equal(prefillTokens(mockText(11, 3), scenario), null, "more than the scenario's text");
    assert.equal(prefillTokens(mockText(4, 2), scenario), null, "another seed's text");
    assert.equal(prefillTokens("", scenario), null);
  });

  test("planCompletion continues a prefill of the scenario's text, counts `after` and max_tokens in the answer", () => {
    const scenario = parseScenario("mock?tokens=10&seed=3&fail=cut&after=2");
    const plan = planCompletion(
      request([
        { role: "user", text: "go" },
        { role: "assistant", text: mockText(4, 3) },
      ]),
      scenario,
    );
    assert.deepEqual(plan, { count: 6, finishReason: "stop", failAt: 2, skip: 4 });
    assert.equal(mockText(4, 3) + answerText(plan, scenario), mockText(10, 3));
    const limited = planCompletion(request([{ role: "assistant", text: mockText(4, 3) }], { maxTokens: 3 }), scenario);
    assert.deepEqual(limited, { count: 3, finishReason: "length", failAt: 2, skip: 4 });
    const unrelated = planCompletion(request([{ role: "assistant", text: "The colour is" }]), scenario);
    assert.equal(unrelated.skip, 0);
    assert.equal(unrelated.count, 10);
  });

  test("OpenAI stream: the answer is the rest of the text; usage counts the answer's tokens", async (t) => {
    const { url, app } = await startMock(t);
    const prefill = mockText(5, 7);
    const response = await chat(url, {
      model: "mock?tokens=12&seed=7",
      stream: true,
      stream_options: { include_usage: true },
      messages: [
        { role: "user", content: "Tell me about rivers." },
        { role: "assistant", content: prefill },
      ],
    });
    const parsed = chunks(await new SseReader(response).rest());
    assert.equal(prefill + contentOf(parsed), mockText(12, 7));
    assert.equal(parsed.at(-1)?.usage?.completion_tokens, 7);
    const [entry] = app.journal.entries();
    assert.equal(entry?.tokensSent, 7);
    assert.deepEqual(entry?.messages, [
      { role: "user", text: "Tell me about rivers." },
      { role: "assistant", text: prefill },
    ]);
  });

  test("a prefill holding the whole text gets an empty answer that stops; one that is not the text's start gets the whole text", async (t) => {
    const { url } = await startMock(t);
    const whole = chunks(
      await new SseReader(
        await chat(url, {
          model: "mock?tokens=3&seed=7",
          stream: true,
          messages: [
            { role: "user", content: "x" },
            { role: "assistant", content: mockText(3, 7) },
          ],
        }),
      ).rest(),
    );
    assert.equal(contentOf(whole), "");
    assert.equal(whole.at(-1)?.choices[0]?.finish_reason, "stop");
    const other = chunks(
      await new SseReader(
        await chat(url, {
          model: "mock?tokens=3&seed=7",
          stream: true,
          messages: [
            { role: "user", content: "x" },
            { role: "assistant", content: "The colour is" },
          ],
        }),
      ).rest(),
    );
    assert.equal(contentOf(other), mockText(3, 7));
  });

  test("non-streamed, Anthropic and Gemini requests are continued the same way", async (t) => {
    const { url, app } = await startMock(t);
    const prefill = mockText(2, 9);
    const rest = mockText(6, 9).slice(prefill.length);
    const openai = (await (
      await chat(url, {
        model: "mock?tokens=6&seed=9",
        messages: [
          { role: "user", content: "x" },
          { role: "assistant", content: [{ type: "text", text: prefill }] },
        ],
      })
    ).json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
    assert.equal(openai.choices[0]?.message.content, rest);
    assert.equal(openai.usage.completion_tokens, 4);

    const anthropic = (await (
      await fetch(`${url}/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "mock?tokens=6&seed=9",
          max_tokens: 100,
          messages: [
            { role: "user", content: "x" },
            { role: "assistant", content: prefill },
          ],
        }),
      })
    ).json()) as { content: { text: string }[] };
    assert.equal(anthropic.content[0]?.text, rest);

    const gemini = (await (
      await fetch(`${url}/v1beta/models/${encodeURIComponent("mock?tokens=6&seed=9")}:generateContent`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          contents: [
            { role: "user", parts: [{ text: "x" }] },
            { role: "model", parts: [{ text: prefill }] },
          ],
        }),
      })
    ).json()) as { candidates: { content: { parts: { text: string }[] } }[] };
    assert.equal(gemini.candidates[0]?.content.parts[0]?.text, rest);

    assert.deepEqual(
      app.journal.entries().map((entry) => [entry.format, entry.messages.at(-1)]),
      [
        ["openai", { role: "assistant", text: prefill }],
        ["anthropic", { role: "assistant", text: prefill }],
        ["gemini", { role: "model", text: prefill }],
      ],
    );
  });
});

describe("the journal for failover tests", () => {
  test("firstTokenAt is when the first content token went out, after ttft; null for a request that never sent one", async (t) => {
    const { url, app } = await startMock(t);
    const started = Date.now();
    await new SseReader(await chat(url, { model: "mock?tokens=2&ttft=150", stream: true })).rest();
    await (await chat(url, { model: "mock?fail=stall&after=0", stream: true })).body?.cancel();
    const [served, stalled] = app.journal.entries();
    assert.ok(served?.firstTokenAt !== null && served?.firstTokenAt !== undefined);
    assert.ok(served.firstTokenAt - started >= 140, `first token after ${served.firstTokenAt - started} ms`);
    assert.ok(served.headersSentAt !== null && served.firstTokenAt - served.headersSentAt >= 140);
    await app.journal.waitFor((entry) => entry.clientClosed, 1000);
    assert.equal(stalled?.firstTokenAt, null);
  });

  test("a long message is kept cut to JOURNAL_TEXT_LIMIT characters; its digest is of the whole text", async (t) => {
    const { url, app } = await startMock(t);
    await (await chat(url, { model: "mock?tokens=1", messages: [{ role: "user", content: "w".repeat(5000) }] })).text();
    assert.equal(app.journal.entries()[0]?.messages[0]?.text.length, 4096);
    assert.equal(app.journal.entries()[0]?.messageDigests[0]?.length, 5000);
    assert.equal(app.journal.entries()[0]?.messageDigests[0]?.sha256, createHash("sha256").update("w".repeat(5000)).digest("hex"));
  });
});
