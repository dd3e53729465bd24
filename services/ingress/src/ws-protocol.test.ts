import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type EventBody, FinishReason, RunnelError, type StreamEvent } from "@runnel/shared";
import { readClientFrame, refusalFrame, StreamFrames } from "./ws-protocol.js";

const STREAM = "st_abc";
let seq = 0;
function event(body: EventBody, at = ++seq): StreamEvent {
  return { streamId: STREAM, seq: at, epoch: 0, event: body };
}

function frames(id: string | number = "q1"): StreamFrames {
  return new StreamFrames(id, STREAM, { id: `chatcmpl-${STREAM}`, created: 1_700_000_000, model: "chat" });
}

describe("readClientFrame", () => {
  test("reads the three client frames; resume starts after 0 by default", () => {
    assert.deepEqual(readClientFrame('{"type":"request","id":"q1","body":{"model":"m"}}'), { frame: { type: "request", id: "q1", body: { model: "m" } } });
    assert.deepEqual(readClientFrame('{"type":"cancel","id":7}'), { frame: { type: "cancel", id: 7 } });
    assert.deepEqual(readClientFrame('{"type":"resume","id":"r","streamId":"s"}'), { frame: { type: "resume", id: "r", streamId: "s", after: 0 } });
  });

  test("a frame that is not JSON has no id; an invalid one keeps a usable id and names the field", () => {
    assert.deepEqual(readClientFrame("{nope"), { id: null, problem: { message: "the frame is not valid JSON" } });
    const invalid = readClientFrame('{"type":"resume","id":3,"streamId":"s","after":-1}');
    assert.ok("problem" in invalid);
    assert.equal(invalid.id, 3);
    assert.equal(invalid.problem.param, "after");
    assert.match(invalid.problem.message, /^invalid frame: after: /);
    const badId = readClientFrame('{"type":"cancel","id":""}');
    assert.ok("problem" in badId);
    assert.equal(badId.id, null);
  });
});

describe("StreamFrames", () => {
  test("started, chunk, done: the documented frames, their text JSON.stringify's to the byte", () => {
    const stream = frames();
    const started = stream.started("tok");
    assert.equal(stream.text(started), '{"type":"started","id":"q1","streamId":"st_abc","resumeToken":"tok"}');
    const role = stream.frame(event({ $case: "started", value: { provider: "p", model: "served", attempt: 1 } }, 1));
    const delta = stream.frame(event({ $case: "textDelta", value: { text: 'a "b"\n' } }, 2));
    const done = stream.frame(event({ $case: "done", value: { finishReason: FinishReason.FINISH_REASON_LENGTH } }, 3));
    assert.ok(role && delta && done);
    assert.equal(
      stream.text(delta),
      '{"type":"chunk","id":"q1","streamId":"st_abc","seq":2,"chunk":{"id":"chatcmpl-st_abc","object":"chat.completion.chunk","created":1700000000,"model":"served","choices":[{"index":0,"delta":{"content":"a \\"b\\"\\n"},"finish_reason":null}]}}',
    );
    assert.equal(stream.text(done), '{"type":"done","id":"q1","streamId":"st_abc","seq":3,"finish_reason":"length","usage":null}');
    for (const frame of [started, role, delta, done]) assert.equal(stream.text(frame), JSON.stringify(frame));
  });

  test("a usage event (older workers) sends nothing; its usage comes in the done frame", () => {
    const stream = frames(9);
    assert.equal(stream.frame(event({ $case: "usage", value: { inputTokens: 2, outputTokens: 3, cachedInputTokens: 1, reasoningTokens: 0 } })), undefined);
    const done = stream.frame(event({ $case: "done", value: { finishReason: FinishReason.FINISH_REASON_STOP } }));
    assert.deepEqual(done && done.type === "done" ? done.usage : undefined, {
      prompt_tokens: 2,
      completion_tokens: 3,
      total_tokens: 5,
      prompt_tokens_details: { cached_tokens: 1 },
      completion_tokens_details: { reasoning_tokens: 0 },
    });
  });

  test("a failover is a chunk frame; an error event the terminal error frame with the stream id", () => {
    const stream = frames(5);
    const failover = stream.frame(
      event({ $case: "failover", value: { mode: 2, from: undefined, to: { provider: "b", model: "m2" }, reasonCode: "X", reason: "y", takeover: false } }),
    );
    assert.ok(failover);
    assert.equal(failover.type, "chunk");
    assert.equal(stream.text(failover), JSON.stringify(failover));
    const error = stream.frame(
      event({ $case: "error", value: { code: "RUNNEL_ERR_PROVIDER_STREAM_CUT", message: "cut", retryable: true, httpStatus: 502 } }, 0),
    );
    assert.deepEqual(error, {
      type: "error",
      id: 5,
      streamId: STREAM,
      error: { message: "cut", type: "server_error", param: null, code: "RUNNEL_ERR_PROVIDER_STREAM_CUT" },
    });
  });

  test("a refusal has no stream id, and the field at fault", () => {
    const frame = refusalFrame(null, new RunnelError("RUNNEL_ERR_INVALID_REQUEST", "bad", { param: "body" }));
    assert.equal(
      JSON.stringify(frame),
      '{"type":"error","id":null,"error":{"message":"bad","type":"invalid_request_error","param":"body","code":"RUNNEL_ERR_INVALID_REQUEST"}}',
    );
  });
});
