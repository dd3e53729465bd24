import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Journal, type JournalEntry } from "./journal.js";

function entry(id: string): JournalEntry {
  return {
    id,
    format: "openai",
    model: "mock",
    fail: null,
    stream: true,
    receivedAt: Date.now(),
    headersSentAt: null,
    status: null,
    tokensSent: 0,
    firstTokenAt: null,
    finished: false,
    clientClosed: false,
    clientClosedAt: null,
    authorization: false,
    credentialSha256: null,
    traceparent: null,
    bodyBytes: null,
    messages: [],
    messageDigests: [],
  };
}

describe("Journal", () => {
  test("keeps only the latest entries", () => {
    const journal = new Journal(3);
    for (const id of ["a", "b", "c", "d", "e"]) journal.add(entry(id));
    assert.deepEqual(
      journal.entries().map((item) => item.id),
      ["c", "d", "e"],
    );
    journal.clear();
    assert.deepEqual(journal.entries(), []);
  });

  test("entries() returns copies", () => {
    const journal = new Journal();
    journal.add(entry("a"));
    const [copy] = journal.entries();
    assert.ok(copy);
    copy.finished = true;
    assert.equal(journal.entries()[0]?.finished, false);
  });

  test("waitFor resolves with an existing match, or on a later change", async () => {
    const journal = new Journal();
    const live = entry("a");
    journal.add(live);
    assert.equal((await journal.waitFor((item) => item.id === "a", 100)).id, "a");
    const waiting = journal.waitFor((item) => item.id === "a" && item.finished, 1000);
    setTimeout(() => {
      live.finished = true;
      journal.changed(live);
    }, 20);
    assert.equal((await waiting).finished, true);
  });

  test("waitFor rejects after the timeout", async () => {
    const journal = new Journal();
    await assert.rejects(
      journal.waitFor(() => true, 30),
      /no matching entry within 30 ms/,
    );
  });
});
