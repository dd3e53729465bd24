import assert from "node:assert/strict";
import { test } from "node:test";
import { LineSplitter, SseParser } from "./sse-parser.js";

test("events split across reads come out whole, each with its own id (none when it had none)", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push('id: 1\ndata: {"a"'), []);
  assert.deepEqual(parser.push(':1}\n\n: keep-alive\n\ndata: {"b":2}\r\n\r\nid: 3\r'), [{ id: "1", data: '{"a":1}' }, { data: '{"b":2}' }]);
  assert.deepEqual(parser.push("\ndata: [DONE]\n\n"), [{ id: "3", data: "[DONE]" }]);
  assert.equal(parser.comments, 1);
});

test("multi-line data is joined with newlines; event names and retry are read", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push("event: streams\ndata: line one\ndata: line two\n\nretry: 450\n\n"), [
    { event: "streams", data: "line one\nline two" },
    { data: "", retry: 450 },
  ]);
});

test("NDJSON lines come out whole; blank lines are heartbeats", () => {
  const lines = new LineSplitter();
  assert.deepEqual(lines.push('{"a":1}\n\n{"b"'), ['{"a":1}']);
  assert.deepEqual(lines.push(":2}\n"), ['{"b":2}']);
  assert.equal(lines.blankLines, 1);
});
