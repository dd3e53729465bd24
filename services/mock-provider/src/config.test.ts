import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadMockConfig, MockConfigError } from "./config.js";

describe("loadMockConfig", () => {
  test("defaults", () => {
    assert.deepEqual(loadMockConfig({}), { port: 9001, host: "0.0.0.0", defaults: {}, logLevel: "info" });
  });

  test("reads every variable (empty ones count as unset)", () => {
    const config = loadMockConfig({
      MOCK_PORT: "1234",
      HOST: "127.0.0.1",
      MOCK_TTFT_MS: "50",
      MOCK_ITL_MS: "5",
      MOCK_TOKENS: "10",
      LOG_LEVEL: "debug",
      PORT: "",
    });
    assert.deepEqual(config, { port: 1234, host: "127.0.0.1", defaults: { ttftMs: 50, itlMs: 5, tokens: 10 }, logLevel: "debug" });
    assert.equal(loadMockConfig({ MOCK_PORT: "" }).port, 9001);
  });

  test("a bad value is an error naming the variable", () => {
    assert.throws(
      () => loadMockConfig({ MOCK_PORT: "http" }),
      (error: unknown) => error instanceof MockConfigError && error.message.startsWith("MOCK_PORT=http"),
    );
    assert.throws(() => loadMockConfig({ MOCK_PORT: "70000" }), /MOCK_PORT=70000/);
    assert.throws(() => loadMockConfig({ MOCK_ITL_MS: "-3" }), /MOCK_ITL_MS=-3/);
    assert.throws(() => loadMockConfig({ MOCK_TOKENS: "lots" }), /MOCK_TOKENS=lots/);
    assert.throws(() => loadMockConfig({ LOG_LEVEL: "loud" }), /LOG_LEVEL=loud/);
  });
});
