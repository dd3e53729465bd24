import assert from "node:assert/strict";
import { test } from "node:test";
import { StreamSession } from "./session.js";
import type { Transport, TransportContext, WireItem } from "./transports/index.js";

const chunk = (content: string) => ({ object: "chat.completion.chunk", model: "up-1", choices: [{ index: 0, delta: { content }, finish_reason: null }] });
const role = { object: "chat.completion.chunk", model: "up-1", choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] };
const finish = { object: "chat.completion.chunk", model: "up-1", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] };
const usage = { object: "chat.completion.chunk", model: "up-1", choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } };

/** A transport whose connections the test drives: it records every open and resume and hands back their sinks. */
function scripted() {
  const calls: { kind: "open" | "resume"; after: number; sink: TransportContext["sink"]; dropped: boolean }[] = [];
  const transport: Transport = {
    id: "scripted",
    label: "Scripted",
    available: true,
    note: "",
    open(_body, context) {
      const call = { kind: "open" as const, after: 0, sink: context.sink, dropped: false };
      calls.push(call);
      return { drop: () => (call.dropped = true) };
    },
    resume(_stream, after, context) {
      const call = { kind: "resume" as const, after, sink: context.sink, dropped: false };
      calls.push(call);
      return { drop: () => (call.dropped = true) };
    },
  };
  return { transport, calls };
}

function sinkOf(calls: readonly { sink: TransportContext["sink"] }[], index: number): (item: WireItem) => void {
  const call = calls[index];
  assert.ok(call, `no connection ${index}`);
  return call.sink;
}

const until = async (condition: () => boolean) => {
  for (let index = 0; index < 200 && !condition(); index += 1) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(condition(), "condition never held");
};

test("a dropped connection resumes after the last event: the answer is whole, a replayed event is not repeated", async () => {
  const { transport, calls } = scripted();
  let clock = 0;
  const session = new StreamSession({ transport, body: { model: "m", messages: [] }, base: "http://x", key: undefined, now: () => clock });
  session.start();
  const first = sinkOf(calls, 0);
  first({ type: "opened", streamId: "s1", resumeToken: "t1" });
  clock = 100;
  first({ type: "chunk", seq: 1, chunk: role });
  first({ type: "chunk", seq: 2, chunk: chunk("Hello") });
  session.drop();
  assert.equal(calls[0]?.dropped, true);
  assert.equal(session.status, "resuming");
  await until(() => calls.length === 2);
  assert.deepEqual([calls[1]?.kind, calls[1]?.after], ["resume", 2]);
  const second = sinkOf(calls, 1);
  // A server that replayed one event too many: counted, not shown twice.
  second({ type: "chunk", seq: 2, chunk: chunk("Hello") });
  clock = 150;
  second({ type: "chunk", seq: 3, chunk: chunk(" world") });
  second({ type: "chunk", seq: 4, chunk: finish });
  second({ type: "chunk", seq: 4, chunk: usage });
  second({ type: "done", seq: undefined, finishReason: "stop", usage: undefined });
  assert.equal(session.status, "done");
  assert.equal(session.answer.text, "Hello world");
  assert.deepEqual([session.ledger.received, session.ledger.duplicates, session.ledger.gaps, session.ledger.resumes], [4, 1, 0, [2]]);
  assert.equal(session.figures.tokens, 2);
  assert.equal(session.figures.ttftMs, 100);
  assert.equal(session.usage?.completion_tokens, 2);
  assert.equal(session.route, "up-1");
  assert.deepEqual(session.carriedBy, ["scripted", "scripted"]);
});

test("a restart failover discards the answer so far and says so; the route follows the failover", () => {
  const { transport, calls } = scripted();
  const session = new StreamSession({ transport, body: { model: "m", messages: [] }, base: "http://x", key: undefined });
  session.start();
  const sink = sinkOf(calls, 0);
  sink({ type: "opened", streamId: "s1", resumeToken: "t1" });
  sink({ type: "chunk", seq: 1, chunk: role });
  sink({ type: "chunk", seq: 2, chunk: chunk("half an ans") });
  sink({
    type: "chunk",
    seq: 3,
    chunk: {
      choices: [],
      runnel: {
        failover: {
          mode: "restart",
          from: { provider: "a", model: "x" },
          to: { provider: "b", model: "y" },
          reason_code: "RUNNEL_ERR_PROVIDER_STREAM_CUT",
          takeover: false,
        },
      },
    },
  });
  sink({ type: "chunk", seq: 4, chunk: chunk("a whole answer") });
  assert.equal(session.answer.text, "a whole answer");
  assert.equal(session.answer.markers, 1);
  assert.equal(session.route, "b/y");
  const marker = session.answer.segments.find((segment) => segment.kind === "marker");
  assert.match(marker?.kind === "marker" ? marker.text : "", /failover \(restart\): a\/x → b\/y \(RUNNEL_ERR_PROVIDER_STREAM_CUT\)/);
});

test("a cancelled stream ends as cancelled; an ingress restarting is resumed, with a marker", async () => {
  const { transport, calls } = scripted();
  const session = new StreamSession({ transport, body: { model: "m", messages: [] }, base: "http://x", key: undefined });
  session.start();
  const first = sinkOf(calls, 0);
  first({ type: "opened", streamId: "s1", resumeToken: "t1" });
  first({ type: "chunk", seq: 1, chunk: role });
  first({ type: "error", seq: undefined, error: { code: "RUNNEL_ERR_SHUTTING_DOWN", message: "resume from seq 1" } });
  await until(() => calls.length === 2);
  assert.equal(calls[1]?.after, 1);
  const second = sinkOf(calls, 1);
  second({ type: "error", seq: 2, error: { code: "RUNNEL_ERR_CANCELLED", message: "cancelled" } });
  assert.equal(session.status, "cancelled");
  assert.deepEqual(
    session.answer.segments.flatMap((segment) => (segment.kind === "marker" ? [segment.tone] : [])),
    ["restart", "resume", "end"],
  );
});

test("an error before the stream exists is the end", () => {
  const { transport, calls } = scripted();
  const session = new StreamSession({ transport, body: { model: "m", messages: [] }, base: "http://x", key: undefined });
  session.start();
  sinkOf(calls, 0)({ type: "error", seq: undefined, status: 404, error: { code: "RUNNEL_ERR_MODEL_NOT_FOUND", message: "no" } });
  assert.equal(session.status, "error");
  assert.equal(session.error?.code, "RUNNEL_ERR_MODEL_NOT_FOUND");
});
