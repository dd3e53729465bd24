import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DEFAULT_SEED, DEFAULT_TOKENS, mockText, mockTokens } from "./text.js";

describe("mockTokens", () => {
  test("is deterministic for a seed", () => {
    assert.deepEqual(mockTokens(50, 7), mockTokens(50, 7));
  });

  test("differs between seeds", () => {
    assert.notDeepEqual(mockTokens(20, 1), mockTokens(20, 2));
  });

  test("gives exactly count tokens, and none for 0", () => {
    assert.equal(mockTokens(13, 0).length, 13);
    assert.deepEqual(mockTokens(0, 0), []);
  });

  test("the first token has no leading space, every later one starts with one", () => {
    const tokens = mockTokens(40, 3);
    assert.match(tokens[0] ?? "", /^[a-z]+$/);
    for (const token of tokens.slice(1)) assert.match(token, /^ [a-z]+$/);
  });

  test("a longer run extends a shorter one (prefix property)", () => {
    assert.deepEqual(mockTokens(50, 9).slice(0, 10), mockTokens(10, 9));
  });

  test("uses more than a handful of words", () => {
    assert.ok(new Set(mockTokens(200, 0).map((token) => token.trim())).size > 20);
  });
});

describe("mockText", () => {
  test("joins the tokens", () => {
    assert.equal(mockText(25, 4), mockTokens(25, 4).join(""));
  });

  test("defaults to DEFAULT_TOKENS tokens and DEFAULT_SEED", () => {
    assert.equal(DEFAULT_TOKENS, 32);
    assert.equal(DEFAULT_SEED, 0);
    assert.equal(mockText(), mockTokens(32, 0).join(""));
    assert.equal(mockText().split(" ").length, 32);
  });
});
