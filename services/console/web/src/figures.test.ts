import assert from "node:assert/strict";
import { test } from "node:test";
import { Figures, TIMELINE_GAPS } from "./figures.js";

test("time to first token, overall and rolling rates, total time and gaps, on the page's clock", () => {
  const figures = new Figures(1_000);
  assert.equal(figures.ttftMs, undefined);
  assert.equal(figures.overallRate, undefined);
  // First token 250 ms after the request, then one every 20 ms.
  for (let index = 0; index < 11; index += 1) figures.token(1_250 + index * 20);
  assert.equal(figures.ttftMs, 250);
  assert.equal(figures.tokens, 11);
  assert.equal(figures.overallRate, 50);
  assert.deepEqual(figures.gaps.slice(0, 3), [250, 20, 20]);
  // 11 tokens within the last second of 1 500.
  assert.equal(figures.rollingRate(1_500), 11);
  // A second later nothing new arrived.
  assert.equal(figures.rollingRate(2_600), 0);
  figures.end(1_600);
  assert.equal(figures.totalMs(99_999), 600);
  assert.equal(figures.rollingRate(99_999), 11);
});

test("the timeline keeps the most recent gaps only", () => {
  const figures = new Figures(0);
  for (let index = 1; index <= TIMELINE_GAPS + 10; index += 1) figures.token(index);
  assert.equal(figures.gaps.length, TIMELINE_GAPS);
  assert.equal(figures.tokens, TIMELINE_GAPS + 10);
});
