import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FAIL_MODES, parseScenario, ScenarioError } from "./scenario.js";

describe("parseScenario", () => {
  test("plain `mock` gives the defaults", () => {
    assert.deepEqual(parseScenario("mock"), {
      tokens: 32,
      ttftMs: 0,
      itlMs: 0,
      seed: 0,
      fail: null,
      after: 2,
      retryAfterSeconds: 1,
      key: null,
      usage: "requested",
    });
  });

  test("reads every key", () => {
    assert.deepEqual(parseScenario("mock?tokens=100&ttft=50&itl=5&seed=3&fail=500-once&after=7&retry_after=9&key=k1&usage=always"), {
      tokens: 100,
      ttftMs: 50,
      itlMs: 5,
      seed: 3,
      fail: "500-once",
      after: 7,
      retryAfterSeconds: 9,
      key: "k1",
      usage: "always",
    });
  });

  test("server-wide defaults apply unless the model overrides them", () => {
    const defaults = { ttftMs: 20, itlMs: 3, tokens: 8 };
    assert.deepEqual({ ...parseScenario("mock", defaults) }, { ...parseScenario("mock"), ttftMs: 20, itlMs: 3, tokens: 8 });
    const overridden = parseScenario("mock?ttft=0&tokens=2", defaults);
    assert.equal(overridden.ttftMs, 0);
    assert.equal(overridden.tokens, 2);
    assert.equal(overridden.itlMs, 3);
  });

  test("accepts every fail mode", () => {
    for (const mode of FAIL_MODES) {
      const model = mode === "500-once" || mode === "outage" ? `mock?fail=${mode}&key=x` : `mock?fail=${mode}`;
      assert.equal(parseScenario(model).fail, mode);
    }
  });

  test("the base name does not matter", () => {
    assert.equal(parseScenario("gpt-4o?tokens=3").tokens, 3);
  });

  test("an unknown fail mode is an error naming it", () => {
    assert.throws(
      () => parseScenario("mock?fail=explode"),
      (error: unknown) => error instanceof ScenarioError && error.message.includes('"explode"'),
    );
  });

  test("rejects unknown keys, repeated keys and bad numbers", () => {
    assert.throws(() => parseScenario("mock?token=5"), /unknown key "token"/);
    assert.throws(() => parseScenario("mock?tokens=5&tokens=6"), /given twice/);
    assert.throws(() => parseScenario("mock?tokens=-1"), /tokens=-1 is not a non-negative integer/);
    assert.throws(() => parseScenario("mock?ttft=1.5"), /ttft=1\.5/);
    assert.throws(() => parseScenario("mock?itl=abc"), /itl=abc/);
    assert.throws(() => parseScenario("mock?tokens=99999999"), /above the limit/);
    assert.throws(() => parseScenario("mock?usage=never"), /usage=never/);
  });

  test("fail=500-once and fail=outage need a key", () => {
    assert.throws(() => parseScenario("mock?fail=500-once"), /needs key=/);
    assert.throws(() => parseScenario("mock?fail=outage"), /needs key=<name>, the outage switched on and off by PUT and DELETE \/_mock\/outages\/<name>/);
    assert.throws(() => parseScenario("mock?fail=outage&key="), /needs key=/);
  });
});
