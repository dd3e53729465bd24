/**
 * The V8 heap of a process started with `--inspect=127.0.0.1:<port>`, read
 * through its inspector after a full garbage collection: what the process's
 * JavaScript really holds, which RSS (heap plus garbage plus everything
 * else) only approximates. Used by the memory scenarios only.
 */
import WebSocket from "ws";
import { httpJson } from "./load.js";

/** process.memoryUsage() of the process after a full collection, in KB. */
export interface HeapReading {
  readonly heapUsedKb: number;
  /** Memory of C++ objects bound to JavaScript ones (Buffers included). */
  readonly externalKb: number;
  readonly arrayBuffersKb: number;
}

/** Collects garbage in the process listening on inspector `port`, then reads its memory. */
export async function heapAfterGc(port: number, timeoutMs = 30_000): Promise<HeapReading> {
  const targets = (await httpJson("GET", `http://127.0.0.1:${port}/json/list`)).body as { webSocketDebuggerUrl?: string }[];
  const url = targets[0]?.webSocketDebuggerUrl;
  if (!url) throw new Error(`no inspector target on port ${port}`);
  const socket = new WebSocket(url, { perMessageDeflate: false });
  const timer = setTimeout(() => socket.terminate(), timeoutMs);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    });
    const answers = new Map<number, (answer: { result?: unknown; error?: { message: string } }) => void>();
    socket.on("message", (data) => {
      const answer = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message: string } };
      if (answer.id !== undefined) answers.get(answer.id)?.(answer);
    });
    let next = 0;
    const call = (method: string, params: Record<string, unknown> = {}) =>
      new Promise<unknown>((resolve, reject) => {
        const id = ++next;
        answers.set(id, (answer) => (answer.error ? reject(new Error(`${method}: ${answer.error.message}`)) : resolve(answer.result)));
        socket.once("close", () => reject(new Error(`${method}: the inspector closed`)));
        socket.send(JSON.stringify({ id, method, params }));
      });
    await call("HeapProfiler.collectGarbage");
    const evaluated = (await call("Runtime.evaluate", { expression: "JSON.stringify(process.memoryUsage())", returnByValue: true })) as {
      result: { value: string };
    };
    const usage = JSON.parse(evaluated.result.value) as { heapUsed: number; external: number; arrayBuffers: number };
    const kb = (bytes: number) => Math.round(bytes / 1024);
    return { heapUsedKb: kb(usage.heapUsed), externalKb: kb(usage.external), arrayBuffersKb: kb(usage.arrayBuffers) };
  } finally {
    clearTimeout(timer);
    socket.terminate();
  }
}
