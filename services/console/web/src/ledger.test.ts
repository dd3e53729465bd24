import assert from "node:assert/strict";
import { test } from "node:test";
import { EventLedger } from "./ledger.js";

test("consecutive positions are new; a replayed one is a duplicate; a skipped one is a gap", () => {
  const ledger = new EventLedger();
  for (const seq of [1, 2, 3]) assert.equal(ledger.accept(seq), "new");
  assert.equal(ledger.resumed(), 3);
  assert.equal(ledger.accept(3), "duplicate");
  assert.equal(ledger.accept(4), "new");
  assert.equal(ledger.accept(7), "new");
  assert.deepEqual([ledger.received, ledger.duplicates, ledger.gaps, ledger.lastSeq, ledger.resumes], [5, 1, 2, 7, [3]]);
});

test("the usage chunk shares the finish chunk's position without counting as a repeat; unnumbered frames are not counted", () => {
  const ledger = new EventLedger();
  ledger.accept(1);
  ledger.accept(2);
  assert.equal(ledger.accept(2, true), "new");
  assert.equal(ledger.accept(undefined), "unnumbered");
  assert.deepEqual([ledger.received, ledger.duplicates], [2, 0]);
});
