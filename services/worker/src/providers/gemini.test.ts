import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FinishReason, RunnelError } from "@runnel/shared";
import {
  createGeminiAdapter,
  finishReasonFromGemini,
  geminiRequestBody,
  geminiSchema,
  geminiStreamUrl,
  parseGoogleDuration,
  readGeminiError,
} from "./gemini.js";
import { ProviderError } from "./http.js";
import { BOUNDED, chatRequest, errorAnswer, rejection, replay, runAdapter, sse, textMessage, upstream, within } from "./test-support.js";

describe("geminiRequestBody", () => {
  test("a minimal request is contents only", () => {
    assert.deepEqual(geminiRequestBody(chatRequest()), { contents: [{ role: "user", parts: [{ text: "Hi" }] }] });
  });

  test("system messages become systemInstruction; sampling fields go in generationConfig under Gemini's names", () => {
    const body = geminiRequestBody(
      chatRequest({
        messages: [textMessage("system", "Be brief."), textMessage("user", "Hi")],
        temperature: 0,
        topP: 0.9,
        maxTokens: 100,
        stop: ["END"],
        seed: 3,
      }),
    );
    assert.deepEqual(body.systemInstruction, { parts: [{ text: "Be brief." }] });
    assert.deepEqual(body.generationConfig, { temperature: 0, topP: 0.9, maxOutputTokens: 100, stopSequences: ["END"], seed: 3 });
    assert.deepEqual(body.contents, [{ role: "user", parts: [{ text: "Hi" }] }]);
  });

  test("assistant turns are model turns with functionCall parts; tool results are functionResponse parts named after their call", () => {
    const body = geminiRequestBody(
      chatRequest({
        messages: [
          textMessage("user", "Weather?"),
          {
            role: "assistant",
            content: [],
            name: "",
            toolCallId: "",
            toolCalls: [
              { id: "call_a", name: "get_weather", arguments: '{"city":"Paris"}' },
              { id: "call_b", name: "get_time", arguments: "" },
            ],
          },
          { ...textMessage("tool", '{"temp_c":21}'), toolCallId: "call_a" },
          { ...textMessage("tool", "12:00"), toolCallId: "call_b" },
          textMessage("assistant", "It is 21C at noon."),
        ],
      }),
    );
    assert.deepEqual(body.contents, [
      { role: "user", parts: [{ text: "Weather?" }] },
      { role: "model", parts: [{ functionCall: { name: "get_weather", args: { city: "Paris" } } }, { functionCall: { name: "get_time", args: {} } }] },
      {
        role: "user",
        parts: [
          { functionResponse: { name: "get_weather", response: { temp_c: 21 } } },
          { functionResponse: { name: "get_time", response: { content: "12:00" } } },
        ],
      },
      { role: "model", parts: [{ text: "It is 21C at noon." }] },
    ]);
  });

  test("tools become functionDeclarations with JSON Schema keys Gemini rejects removed, never a property of that name", () => {
    const parameters = {
      $schema: "http://json-schema.org/draft-07/schema#",
      type: "object",
      additionalProperties: false,
      properties: { additionalProperties: { type: "string" }, nested: { type: "object", additionalProperties: false, properties: { a: { type: "integer" } } } },
      required: ["additionalProperties"],
    };
    const body = geminiRequestBody(
      chatRequest({
        tools: [
          { name: "f", description: "does f", parametersJson: JSON.stringify(parameters) },
          { name: "g", description: "", parametersJson: "" },
        ],
      }),
    );
    assert.deepEqual(body.tools, [
      {
        functionDeclarations: [
          {
            name: "f",
            description: "does f",
            parameters: {
              type: "object",
              properties: { additionalProperties: { type: "string" }, nested: { type: "object", properties: { a: { type: "integer" } } } },
              required: ["additionalProperties"],
            },
          },
          { name: "g" },
        ],
      },
    ]);
    assert.deepEqual(geminiSchema([{ $schema: "x", type: "string" }]), [{ type: "string" }]);
  });

  test("every tool_choice form maps to functionCallingConfig", () => {
    const config = (json: string) => geminiRequestBody(chatRequest({ toolChoiceJson: json })).toolConfig;
    assert.deepEqual(config('"auto"'), { functionCallingConfig: { mode: "AUTO" } });
    assert.deepEqual(config('"none"'), { functionCallingConfig: { mode: "NONE" } });
    assert.deepEqual(config('"required"'), { functionCallingConfig: { mode: "ANY" } });
    assert.deepEqual(config('{"type":"function","function":{"name":"f"}}'), { functionCallingConfig: { mode: "ANY", allowedFunctionNames: ["f"] } });
  });

  test("images: data URLs inline, other URLs as fileData with a MIME type when the extension tells it", () => {
    const body = geminiRequestBody(
      chatRequest({
        messages: [
          {
            role: "user",
            content: [
              { part: { $case: "imageUrl", value: { url: "data:image/webp;base64,UklGR==", detail: "" } } },
              { part: { $case: "imageUrl", value: { url: "https://example.com/a/cat.PNG?size=2", detail: "" } } },
              { part: { $case: "imageUrl", value: { url: "gs://bucket/object", detail: "" } } },
            ],
            name: "",
            toolCallId: "",
            toolCalls: [],
          },
        ],
      }),
    );
    assert.deepEqual(body.contents, [
      {
        role: "user",
        parts: [
          { inlineData: { mimeType: "image/webp", data: "UklGR==" } },
          { fileData: { fileUri: "https://example.com/a/cat.PNG?size=2", mimeType: "image/png" } },
          { fileData: { fileUri: "gs://bucket/object" } },
        ],
      },
    ]);
  });

  test("invalid tool arguments are the client's error", () => {
    assert.throws(
      () =>
        geminiRequestBody(
          chatRequest({ messages: [{ role: "assistant", content: [], name: "", toolCallId: "", toolCalls: [{ id: "c", name: "f", arguments: "{" }] }] }),
        ),
      (error: unknown) => error instanceof RunnelError && error.code === "RUNNEL_ERR_INVALID_REQUEST",
    );
  });

  test("the stream URL carries the model escaped in the path and alt=sse; a models/ prefix is accepted", () => {
    const base = "https://generativelanguage.googleapis.com/v1beta";
    assert.equal(geminiStreamUrl(base, "gemini-2.5-flash"), `${base}/models/gemini-2.5-flash:streamGenerateContent?alt=sse`);
    assert.equal(geminiStreamUrl(`${base}/`, "models/gemini-2.5-flash"), `${base}/models/gemini-2.5-flash:streamGenerateContent?alt=sse`);
    assert.equal(geminiStreamUrl(base, "mock?fail=500"), `${base}/models/mock%3Ffail%3D500:streamGenerateContent?alt=sse`);
  });
});

describe("Gemini finish reasons and errors", () => {
  test("finish reasons map onto OpenAI's set; STOP after a function call is tool_calls", () => {
    assert.equal(finishReasonFromGemini("STOP", false), FinishReason.FINISH_REASON_STOP);
    assert.equal(finishReasonFromGemini("STOP", true), FinishReason.FINISH_REASON_TOOL_CALLS);
    assert.equal(finishReasonFromGemini("MAX_TOKENS", false), FinishReason.FINISH_REASON_LENGTH);
    for (const reason of ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"]) {
      assert.equal(finishReasonFromGemini(reason, false), FinishReason.FINISH_REASON_CONTENT_FILTER, reason);
    }
    assert.equal(finishReasonFromGemini("OTHER", false), FinishReason.FINISH_REASON_STOP);
    assert.equal(finishReasonFromGemini("SOMETHING_NEW", false), FinishReason.FINISH_REASON_STOP);
  });

  test("Google durations", () => {
    assert.equal(parseGoogleDuration("7s"), 7000);
    assert.equal(parseGoogleDuration("0.5s"), 500);
    assert.equal(parseGoogleDuration("soon"), undefined);
  });

  test("readGeminiError: a bad key (400 API_KEY_INVALID) is an auth error; a 429's RetryInfo is its retry delay", () => {
    const badKey = readGeminiError(
      400,
      JSON.stringify({
        error: {
          code: 400,
          message: "API key not valid. Please pass a valid API key.",
          status: "INVALID_ARGUMENT",
          details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "API_KEY_INVALID", domain: "googleapis.com" }],
        },
      }),
    );
    assert.equal(badKey.code, "RUNNEL_ERR_PROVIDER_AUTH");
    assert.equal(badKey.message, "INVALID_ARGUMENT: API key not valid. Please pass a valid API key.");
    const limited = readGeminiError(
      429,
      JSON.stringify({
        error: {
          code: 429,
          message: "You exceeded your current quota.",
          status: "RESOURCE_EXHAUSTED",
          details: [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "7s" }],
        },
      }),
    );
    assert.equal(limited.retryAfterMs, 7000);
    assert.equal(limited.code, undefined);
    assert.deepEqual(readGeminiError(502, "<html>bad gateway</html>"), { message: "<html>bad gateway</html>" });
  });
});

describe("Gemini adapter against an HTTP server", () => {
  const chunk = (text: string, finishReason?: string) => ({
    candidates: [{ content: { parts: [{ text }], role: "model" }, index: 0, ...(finishReason ? { finishReason } : {}) }],
    usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 2, totalTokenCount: 7 },
  });

  test("posts to models/{model}:streamGenerateContent?alt=sse with x-goog-api-key and no key in the URL", BOUNDED, async (t) => {
    const up = await upstream(t, replay(sse(chunk("Hi", "STOP"))), { type: "gemini" });
    up.provider.baseUrl += "/v1beta";
    const run = runAdapter(createGeminiAdapter({ agents: up.agents }), up, { model: "gemini-2.5-flash" });
    await run.result;
    const seen = up.seen[0];
    assert.ok(seen);
    assert.equal(seen.url, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    assert.equal(seen.headers["x-goog-api-key"], "sk-secret-key-123");
    assert.equal(seen.headers.authorization, undefined);
    assert.equal(seen.url.includes("key="), false);
    assert.deepEqual(JSON.parse(seen.body), geminiRequestBody(chatRequest()));
    assert.deepEqual(
      run.events.map((event) => event.$case),
      ["started", "textDelta", "usage", "done"],
    );
  });

  test("a body that ends without a finish reason is a cut", BOUNDED, async (t) => {
    const up = await upstream(t, replay(sse(chunk("a")) + sse(chunk("b"))));
    const run = runAdapter(createGeminiAdapter({ agents: up.agents }), up);
    const error = await rejection(run.result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_STREAM_CUT");
    assert.deepEqual(
      run.events.map((event) => event.$case),
      ["started", "textDelta", "textDelta"],
    );
  });

  test("an error object inside the stream fails it with the mapped code", BOUNDED, async (t) => {
    const up = await upstream(t, replay(sse(chunk("a")) + sse({ error: { code: 503, message: "The model is overloaded.", status: "UNAVAILABLE" } })));
    const error = await rejection(runAdapter(createGeminiAdapter({ agents: up.agents }), up).result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.match(error.message, /UNAVAILABLE: The model is overloaded/);
  });

  test("malformed events are skipped and counted; only malformed events fail with BAD_RESPONSE", BOUNDED, async (t) => {
    const reasons: string[] = [];
    const mixed = await upstream(t, replay(sse(chunk("a")) + sse("{oops") + sse({ candidates: "no" }) + sse(chunk("b", "STOP"))));
    const run = runAdapter(createGeminiAdapter({ agents: mixed.agents, onMalformedChunk: (reason) => reasons.push(reason) }), mixed);
    await run.result;
    assert.equal(reasons.length, 2);
    assert.deepEqual(
      run.events.filter((event) => event.$case === "textDelta"),
      [
        { $case: "textDelta", value: { text: "a" } },
        { $case: "textDelta", value: { text: "b" } },
      ],
    );
    const bad = await upstream(t, replay(sse("{oops") + sse("[1,2")));
    const error = await rejection(runAdapter(createGeminiAdapter({ agents: bad.agents }), bad).result);
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_BAD_RESPONSE");
  });

  test("error answers: 400, bad key, 403, 429 with RetryInfo, 503", BOUNDED, async (t) => {
    const cases: Array<[number, Record<string, unknown>, string]> = [
      [
        400,
        { code: 400, message: "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).", status: "INVALID_ARGUMENT" },
        "RUNNEL_ERR_CONTEXT_LENGTH",
      ],
      [
        400,
        {
          code: 400,
          message: "API key not valid.",
          status: "INVALID_ARGUMENT",
          details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "API_KEY_INVALID" }],
        },
        "RUNNEL_ERR_PROVIDER_AUTH",
      ],
      [403, { code: 403, message: "Permission denied.", status: "PERMISSION_DENIED" }, "RUNNEL_ERR_PROVIDER_AUTH"],
      [
        429,
        {
          code: 429,
          message: "Quota exceeded.",
          status: "RESOURCE_EXHAUSTED",
          details: [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "3s" }],
        },
        "RUNNEL_ERR_PROVIDER_RATE_LIMITED",
      ],
      [503, { code: 503, message: "The model is overloaded. Please try again later.", status: "UNAVAILABLE" }, "RUNNEL_ERR_PROVIDER_UNAVAILABLE"],
    ];
    for (const [status, error, code] of cases) {
      const up = await upstream(t, errorAnswer(status, { error }));
      const failure = await rejection(runAdapter(createGeminiAdapter({ agents: up.agents }), up).result);
      assert.equal(failure.code, code, String(error.message));
      assert.ok(failure.message.includes(String(error.message)), failure.message);
      assert.ok(failure instanceof ProviderError);
      assert.equal(failure.retry, code === "RUNNEL_ERR_PROVIDER_RATE_LIMITED" || code === "RUNNEL_ERR_PROVIDER_UNAVAILABLE", code);
      if (status === 429) assert.equal(failure.retryAfterMs, 3000);
    }
  });

  test("aborting mid-stream closes the upstream socket promptly", BOUNDED, async (t) => {
    const up = await upstream(t, (_request, response) => {
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write(sse(chunk("first")));
    });
    const controller = new AbortController();
    let abortedAt = 0;
    const run = runAdapter(createGeminiAdapter({ agents: up.agents }), up, {
      signal: controller.signal,
      onEmit: (event) => {
        if (event.$case === "textDelta")
          setImmediate(() => {
            abortedAt = performance.now();
            controller.abort(new RunnelError("RUNNEL_ERR_CANCELLED", "client left"));
          });
      },
    });
    assert.equal((await rejection(run.result)).code, "RUNNEL_ERR_CANCELLED");
    const closedAt = await within(up.socketClosed(), 1000, Number.POSITIVE_INFINITY);
    t.diagnostic(`mid-stream: cancel→socket closed ${(closedAt - abortedAt).toFixed(1)} ms`);
    assert.ok(closedAt - abortedAt <= 200, `socket closed ${(closedAt - abortedAt).toFixed(0)} ms after the abort`);
  });
});
