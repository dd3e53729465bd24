import assert from "node:assert/strict";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import { createLogger, ERRORS, type ErrorCode, RunnelError } from "@runnel/shared";
import { grpcError, serviceError } from "./grpc-errors.js";

const log = createLogger("grpc-errors-test", "silent");

test("a RunnelError becomes its catalogued gRPC status, with its code in the runnel-error-code trailer", () => {
  for (const code of Object.keys(ERRORS) as ErrorCode[]) {
    const mapped = grpcError(log, new RunnelError(code, `it was ${code}`));
    assert.equal(mapped.code, ERRORS[code].grpcCode, code);
    assert.equal(mapped.details, `it was ${code}`);
    assert.deepEqual(mapped.metadata.get("runnel-error-code"), [code]);
  }
});

test("a status passes as thrown; anything else is INTERNAL", () => {
  const thrown = serviceError(status.NOT_FOUND, "no stream x");
  assert.equal(grpcError(log, thrown), thrown);
  const other = grpcError(log, new Error("NATS went away"));
  assert.equal(other.code, status.INTERNAL);
  assert.equal(other.details, "NATS went away");
});
