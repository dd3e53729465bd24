import assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { controlPlane } from "@runnel/shared";
import { type AdminClient, age, parseInvocation, renderStreams, runCommand, table, UsageError } from "./admin-cli.js";

const { StreamPhase } = controlPlane;

test("the address comes from --url, then RUNNEL_CONTROL_PLANE_URL, then CONTROL_PLANE_URL, then the npm start default", () => {
  const env = { RUNNEL_CONTROL_PLANE_URL: "a:1", CONTROL_PLANE_URL: "b:2" };
  assert.equal(parseInvocation(["providers", "--url", "c:3"], env).url, "c:3");
  assert.equal(parseInvocation(["providers"], env).url, "a:1");
  assert.equal(parseInvocation(["providers"], { CONTROL_PLANE_URL: "b:2" }).url, "b:2");
  assert.equal(parseInvocation(["providers"], {}).url, "127.0.0.1:50051");
});

test("with GRPC_PORT set (npm start's control plane on another port), the CLI dials that port when no URL is given", () => {
  assert.equal(parseInvocation(["streams", "ls"], { GRPC_PORT: "50123" }).url, "127.0.0.1:50123");
  assert.equal(parseInvocation(["streams", "ls"], { GRPC_PORT: "50123", CONTROL_PLANE_URL: "b:2" }).url, "b:2");
});

test("commands parse into their options", () => {
  assert.deepEqual(parseInvocation(["streams", "ls", "--phase", "Running", "--limit", "5"], {}).command, {
    kind: "streams-ls",
    phase: StreamPhase.STREAM_PHASE_RUNNING,
    limit: 5,
  });
  assert.deepEqual(parseInvocation(["streams", "ls"], {}).command, { kind: "streams-ls", phase: StreamPhase.STREAM_PHASE_UNSPECIFIED, limit: 100 });
  assert.deepEqual(parseInvocation(["streams", "cancel", "abc", "--reason", "why"], {}).command, { kind: "streams-cancel", streamId: "abc", reason: "why" });
  assert.deepEqual(parseInvocation(["workers"], {}).command, { kind: "workers-ls" });
  assert.deepEqual(parseInvocation(["workers", "drain", "w1"], {}).command, { kind: "workers-drain", workerId: "w1" });
  assert.deepEqual(parseInvocation([], {}).command, { kind: "help" });
  const invocation = parseInvocation(["providers", "--json", "--timeout", "2s"], {});
  assert.deepEqual([invocation.json, invocation.timeoutMs], [true, 2_000]);
});

test("usage errors say what is wrong", () => {
  const cases: [string[], RegExp][] = [
    [["streams"], /needs a command: ls, get, cancel/],
    [["streams", "get"], /needs a stream id/],
    [["streams", "ls", "--limit", "0"], /--limit: a positive whole number/],
    [["streams", "get", "x", "--phase", "done"], /--phase does not apply/],
    [["providers", "--bogus"], /Unknown option '--bogus'/],
    [["providers", "--timeout", "soon"], /--timeout: expected a duration/],
    [["nodes"], /unknown command "nodes"/],
  ];
  for (const [argv, message] of cases)
    assert.throws(
      () => parseInvocation(argv, {}),
      (error: Error) => error instanceof UsageError && message.test(error.message),
    );
});

test("a failed call prints its status and exits 64 + its code", async () => {
  const failing = (code: status, details: string): AdminClient => {
    const reject = () => Promise.reject(Object.assign(new Error(details), { code, details, metadata: new Metadata() }));
    return { listStreams: reject, getStream: reject, cancel: reject, getProviderStatus: reject, drainWorker: reject };
  };
  const notFound = await runCommand(parseInvocation(["streams", "get", "x"], {}), failing(status.NOT_FOUND, "no stream x"));
  assert.deepEqual(notFound, { exitCode: 69, stdout: "", stderr: "runnel: NOT_FOUND: no stream x\n" });
  const unavailable = await runCommand(
    parseInvocation(["providers", "--url", "h:1"], {}),
    failing(status.UNAVAILABLE, "No connection established. Resolution note: "),
  );
  assert.equal(unavailable.exitCode, 78);
  assert.equal(unavailable.stderr, "runnel: UNAVAILABLE: No connection established.\n(control plane: h:1; set --url or RUNNEL_CONTROL_PLANE_URL)\n");
});

test("tables align their columns; ages read as people count", () => {
  assert.equal(table(["A", "LONGER"], [["xyz", "1"]]), "A    LONGER\nxyz  1\n");
  assert.deepEqual(
    [age(0, 10_000), age(7_000, 10_000), age(0 + 1, 1 + 600_000), age(1, 1 + 3 * 3_600_000), age(1, 1 + 3 * 86_400_000)],
    ["-", "3s", "10m", "3h", "3d"],
  );
  const rendered = renderStreams(
    [
      controlPlane.StreamState.fromPartial({
        streamId: "s1",
        phase: StreamPhase.STREAM_PHASE_FAILED,
        model: "m",
        errorCode: "RUNNEL_ERR_X",
        createdAtMs: 1_000,
      }),
    ],
    4_000,
  );
  assert.match(rendered, /^s1\s+failed\s+m\s+-\s+-\s+0\s+3s\s+RUNNEL_ERR_X$/m);
  assert.equal(renderStreams([], 0), "no streams\n");
});
