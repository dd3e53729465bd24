import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { ERRORS, type ErrorCode, isErrorCode, openAIErrorBody, RunnelError, toRunnelError } from "./errors.js";

const CODES = Object.keys(ERRORS) as ErrorCode[];
const OPENAI_TYPES = new Set(["invalid_request_error", "authentication_error", "rate_limit_error", "server_error", "not_found_error"]);

describe("the ERRORS catalogue", () => {
  test("is not empty and every code is RUNNEL_ERR_ followed by upper-case words", () => {
    assert.ok(CODES.length >= 10);
    for (const code of CODES) assert.match(code, /^RUNNEL_ERR_[A-Z]+(_[A-Z]+)*$/);
  });

  test("every code has a 4xx or 5xx HTTP status", () => {
    for (const code of CODES) {
      const { httpStatus } = ERRORS[code];
      assert.ok(Number.isInteger(httpStatus) && httpStatus >= 400 && httpStatus <= 599, `${code}: ${httpStatus}`);
    }
  });

  test("every code has a gRPC status code between 0 and 16", () => {
    for (const code of CODES) {
      const { grpcCode } = ERRORS[code];
      assert.ok(Number.isInteger(grpcCode) && grpcCode >= 0 && grpcCode <= 16, `${code}: ${grpcCode}`);
      assert.notEqual(grpcCode, 0, `${code} must not map to OK`);
    }
  });

  test("every code has an OpenAI error type, a retryable flag and a description", () => {
    for (const code of CODES) {
      const spec = ERRORS[code];
      assert.ok(OPENAI_TYPES.has(spec.type), `${code}: ${spec.type}`);
      assert.equal(typeof spec.retryable, "boolean", code);
      assert.ok(spec.description.length > 10, code);
    }
  });

  test("client errors are not retryable and rate limits are", () => {
    assert.equal(ERRORS.RUNNEL_ERR_INVALID_REQUEST.retryable, false);
    assert.equal(ERRORS.RUNNEL_ERR_INVALID_REQUEST.httpStatus, 400);
    assert.equal(ERRORS.RUNNEL_ERR_PROVIDER_RATE_LIMITED.retryable, true);
    assert.equal(ERRORS.RUNNEL_ERR_PROVIDER_RATE_LIMITED.httpStatus, 429);
  });

  test("isErrorCode accepts catalogued codes only, not inherited object keys", () => {
    for (const code of CODES) assert.equal(isErrorCode(code), true, code);
    assert.equal(isErrorCode("RUNNEL_ERR_NOPE"), false);
    assert.equal(isErrorCode("toString"), false);
    assert.equal(isErrorCode("__proto__"), false);
    assert.equal(isErrorCode(""), false);
  });
});

describe("RunnelError", () => {
  test("carries code, the catalogue's status and retryability, message and name", () => {
    const error = new RunnelError("RUNNEL_ERR_PROVIDER_TIMEOUT", "no first token within 100 ms");
    assert.ok(error instanceof Error);
    assert.ok(error instanceof RunnelError);
    assert.equal(error.name, "RunnelError");
    assert.equal(error.code, "RUNNEL_ERR_PROVIDER_TIMEOUT");
    assert.equal(error.message, "no first token within 100 ms");
    assert.equal(error.httpStatus, ERRORS.RUNNEL_ERR_PROVIDER_TIMEOUT.httpStatus);
    assert.equal(error.retryable, ERRORS.RUNNEL_ERR_PROVIDER_TIMEOUT.retryable);
    assert.equal(error.param, undefined);
    assert.equal(error.cause, undefined);
    assert.equal(Object.hasOwn(error, "cause"), false);
    assert.equal(error.spec, ERRORS.RUNNEL_ERR_PROVIDER_TIMEOUT);
  });

  test("carries param and cause when given", () => {
    const cause = new Error("underlying");
    const error = new RunnelError("RUNNEL_ERR_INVALID_REQUEST", "messages[0].role: bad", { param: "messages[0].role", cause });
    assert.equal(error.param, "messages[0].role");
    assert.equal(error.cause, cause);
    assert.equal(error.httpStatus, 400);
    assert.equal(error.retryable, false);
  });

  test("an explicit httpStatus overrides the catalogue's but retryable still comes from the catalogue", () => {
    const error = new RunnelError("RUNNEL_ERR_PROVIDER_BAD_REQUEST", "too long", { httpStatus: 413 });
    assert.equal(error.httpStatus, 413);
    assert.equal(error.retryable, ERRORS.RUNNEL_ERR_PROVIDER_BAD_REQUEST.retryable);
  });

  test("a falsy cause other than undefined is kept", () => {
    const error = new RunnelError("RUNNEL_ERR_INTERNAL", "x", { cause: 0 });
    assert.equal(Object.hasOwn(error, "cause"), true);
    assert.equal(error.cause, 0);
  });
});

describe("toRunnelError", () => {
  test("returns a RunnelError unchanged", () => {
    const original = new RunnelError("RUNNEL_ERR_NO_ROUTE", "none");
    assert.equal(toRunnelError(original), original);
    assert.equal(toRunnelError(original, "RUNNEL_ERR_OVERLOADED"), original);
  });

  test("wraps an Error as RUNNEL_ERR_INTERNAL keeping its message and the error as cause", () => {
    const original = new TypeError("x is not a function");
    const wrapped = toRunnelError(original);
    assert.ok(wrapped instanceof RunnelError);
    assert.equal(wrapped.code, "RUNNEL_ERR_INTERNAL");
    assert.equal(wrapped.message, "x is not a function");
    assert.equal(wrapped.cause, original);
    assert.equal(wrapped.httpStatus, 500);
  });

  test("uses the fallback code when given", () => {
    const wrapped = toRunnelError(new Error("refused"), "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.equal(wrapped.code, "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.equal(wrapped.retryable, true);
  });

  test("wraps a thrown non-Error value, stringifying it for the message", () => {
    const wrapped = toRunnelError("plain string");
    assert.equal(wrapped.message, "plain string");
    assert.equal(wrapped.cause, "plain string");
    assert.equal(toRunnelError(42).message, "42");
  });
});

describe("openAIErrorBody", () => {
  test("has OpenAI's shape with the catalogue's type and the given param", () => {
    assert.deepEqual(openAIErrorBody("RUNNEL_ERR_INVALID_REQUEST", "messages: required", "messages"), {
      error: { message: "messages: required", type: ERRORS.RUNNEL_ERR_INVALID_REQUEST.type, param: "messages", code: "RUNNEL_ERR_INVALID_REQUEST" },
    });
  });

  test("param is null when absent or null", () => {
    assert.equal(openAIErrorBody("RUNNEL_ERR_MODEL_NOT_FOUND", "no such model").error.param, null);
    assert.equal(openAIErrorBody("RUNNEL_ERR_MODEL_NOT_FOUND", "no such model", null).error.param, null);
  });

  test("each catalogued code gets its own type", () => {
    for (const code of CODES) assert.equal(openAIErrorBody(code, "m").error.type, ERRORS[code].type, code);
  });

  test("an unknown code is passed through with type server_error", () => {
    assert.deepEqual(openAIErrorBody("SOMETHING_ELSE", "boom"), { error: { message: "boom", type: "server_error", param: null, code: "SOMETHING_ELSE" } });
  });
});

describe("docs/errors.md", () => {
  const url = new URL("../../../docs/errors.md", import.meta.url);

  /** The table rows of the doc, by code: the cells after the code cell. */
  function documentedRows(): Map<string, string[]> {
    const rows = new Map<string, string[]>();
    for (const line of readFileSync(url, "utf8").split("\n")) {
      const match = /^\|\s*`(RUNNEL_ERR_[A-Z_]+)`\s*\|(.*)\|\s*$/.exec(line);
      if (!match?.[1] || match[2] === undefined) continue;
      assert.equal(rows.has(match[1]), false, `${match[1]} is documented twice`);
      rows.set(
        match[1],
        match[2].split(/(?<!\\)\|/).map((cell) => cell.trim()),
      );
    }
    return rows;
  }

  test("resolves to docs/errors.md at the repository root", () => {
    const path = fileURLToPath(url);
    assert.match(path.replaceAll("\\", "/"), /\/docs\/errors\.md$/);
    assert.doesNotMatch(path.replaceAll("\\", "/"), /\/packages\//);
  });

  test("lists every code in ERRORS", () => {
    const rows = documentedRows();
    const missing = CODES.filter((code) => !rows.has(code));
    assert.deepEqual(missing, [], `undocumented codes: ${missing.join(", ")}`);
  });

  test("lists no code that is not in ERRORS", () => {
    const stale = [...documentedRows().keys()].filter((code) => !isErrorCode(code));
    assert.deepEqual(stale, []);
  });

  test("each row states the code's HTTP status, gRPC code, OpenAI type, retryability, failover rule and health verdict", () => {
    const rows = documentedRows();
    for (const code of CODES) {
      const cells = rows.get(code);
      assert.ok(cells, code);
      const [http, grpc, type, retryable, failover, health, description] = cells;
      const spec = ERRORS[code];
      assert.equal(http, String(spec.httpStatus), `${code} HTTP status`);
      assert.equal(grpc, `${spec.grpcCode} ${GrpcStatus[spec.grpcCode]}`, `${code} gRPC code`);
      assert.equal(type, `\`${spec.type}\``, `${code} type`);
      assert.equal(retryable, spec.retryable ? "yes" : "no", `${code} retryable`);
      assert.equal(failover, `\`${spec.failover}\``, `${code} failover`);
      assert.equal(health, `\`${spec.health}\``, `${code} health`);
      assert.ok(description && description.length > 0, `${code} description`);
    }
  });

  test("explains that a stream that fails after the first byte never ends with [DONE]", () => {
    const text = readFileSync(url, "utf8");
    assert.match(text, /\[DONE\]/);
    assert.match(text, /first byte/);
  });
});
