import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { pino } from "pino";
import { streamLog } from "./logger.js";

/** A pino logger writing JSON lines into `lines`, and how many children it made. */
function capture(level: string) {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const parent = pino({ level }, sink);
  let children = 0;
  const child = parent.child.bind(parent);
  parent.child = ((...args: Parameters<typeof child>) => {
    children += 1;
    return child(...args);
  }) as typeof parent.child;
  return { parent, lines, children: () => children };
}

test("streamLog makes no child until a line is written, and none for a level that is off", () => {
  const { parent, lines, children } = capture("info");
  const log = streamLog(parent, { stream_id: "s-1" });
  log.debug({ detail: 1 }, "not at info");
  assert.equal(children(), 0);
  assert.equal(lines.length, 0);
  log.warn({ code: "RUNNEL_ERR_X" }, "stream failed");
  log.info("plain message");
  assert.equal(children(), 1, "one child, made at the first line and kept");
  assert.equal(lines.length, 2);
  assert.deepEqual(
    lines.map((line) => [line.stream_id, line.msg, line.code]),
    [
      ["s-1", "stream failed", "RUNNEL_ERR_X"],
      ["s-1", "plain message", undefined],
    ],
  );
});
