import assert from "node:assert/strict";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import type { StreamEvent } from "@runnel/shared";
import { openAIWire } from "./openai-encoder.js";
import type { StreamReader } from "./stream-reader.js";
import { type OpenStream, reconnectDelayMs, type WriteStreamOptions, writeStream } from "./stream-writer.js";

/** The part of a reader the writer uses: it delivers what the test sends. */
function fakeReader(): { reader: StreamReader; send: (seq: number, text: string) => void } {
  let sink: ((event: StreamEvent) => void) | undefined;
  let position = 0;
  const reader = {
    streamId: "s1",
    paused: false,
    get position() {
      return position;
    },
    attach: (deliver: (event: StreamEvent) => void) => {
      sink = deliver;
    },
    close: () => {},
    pause: () => {},
    resume: () => {},
  } as unknown as StreamReader;
  const send = (seq: number, text: string) => {
    position = seq;
    sink?.({ streamId: "s1", seq, epoch: 0, event: { $case: "textDelta", value: { text } } });
  };
  return { reader, send };
}

interface Served {
  readonly stream: OpenStream;
  readonly send: (seq: number, text: string) => void;
  readonly abandoned: [string, boolean][];
}

/**
 * An ingress shutting down hands each SSE client a reconnect hint and closes
 * the connection (never reusable by the client's pool): an error event for a
 * client that does not reconnect by itself, a clean end for an EventSource.
 */
describe("writeStream on shutdown", () => {
  let server: Server;
  let port = 0;
  let style: WriteStreamOptions["onShutdown"];
  let served: Promise<Served>;

  before(async () => {
    server = createServer((_request, response) => {
      const { reader, send } = fakeReader();
      const abandoned: [string, boolean][] = [];
      const stream = writeStream({
        reader,
        response,
        wire: openAIWire("sse", { id: "chatcmpl-s1", created: 0, model: "m" }),
        heartbeatIntervalMs: 60_000,
        maxBufferBytes: 1 << 20,
        stuckClientTimeoutMs: 60_000,
        onAbandon: (reason, detach) => abandoned.push([reason, detach]),
        onEnd: () => {},
        ...(style ? { onShutdown: style } : {}),
      });
      resolveServed({ stream, send, abandoned });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  let resolveServed: (served: Served) => void = () => {};
  /** Opens a stream, receives two events, shuts the writer down; returns what the client read and how the response ended. */
  async function cutAfterTwoEvents(): Promise<{ body: string; complete: boolean; abandoned: [string, boolean][] }> {
    served = new Promise((resolve) => {
      resolveServed = resolve;
    });
    return new Promise((resolve, reject) => {
      const call = request({ host: "127.0.0.1", port, path: "/" }, (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (text: string) => {
          body += text;
          if (body.includes("id: 2\n")) void served.then(({ stream }) => stream.shutdown());
        });
        // A connection closed without HTTP's end of body: `aborted`, then `close` with `complete` false.
        response.on("error", () => {});
        response.on("close", () => void served.then(({ abandoned }) => resolve({ body, complete: response.complete, abandoned })));
      });
      call.on("error", reject);
      call.end();
      void served.then(({ send }) => {
        send(1, "Hello");
        send(2, " world");
      });
    });
  }

  test("by default: the retry hint and an explicit RUNNEL_ERR_SHUTTING_DOWN error naming the position, then the connection closes", async () => {
    style = undefined;
    const { body, complete, abandoned } = await cutAfterTwoEvents();
    const [, tail] = body.split("id: 2\n");
    assert.match(
      tail ?? "",
      /^data: .*\n\nretry: \d+\ndata: \{"error":\{"message":"the ingress is shutting down; resume from seq 2 on another replica".*"code":"RUNNEL_ERR_SHUTTING_DOWN"\}\}\n\n$/,
    );
    assert.ok(!body.includes("[DONE]"));
    assert.equal(complete, false, "the connection was closed, not left for reuse");
    assert.deepEqual(abandoned, [["ingress shutting down", true]], "detached, not cancelled");
  });

  test("for EventSource (reconnect): the retry hint alone, no error event, then the connection closes", async () => {
    style = "reconnect";
    const { body, complete, abandoned } = await cutAfterTwoEvents();
    const [, tail] = body.split("id: 2\n");
    assert.match(tail ?? "", /^data: .*\n\nretry: \d+\n\n$/);
    assert.ok(!body.includes("error"));
    assert.equal(complete, false);
    assert.deepEqual(abandoned, [["ingress shutting down", true]]);
  });

  test("the reconnect delay is short and spread over 250-999 ms", () => {
    assert.equal(
      reconnectDelayMs(() => 0),
      250,
    );
    assert.equal(
      reconnectDelayMs(() => 0.999_999),
      999,
    );
  });
});
