import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { apiKeyDigest, RunnelError } from "@runnel/shared";
import { Auth } from "./auth.js";

const APP_KEY = "sk-app-key-0123456789";
const OPS_KEY = "sk-ops-key-0123456789";

function withKeys(...keys: { name: string; key: string; admin?: boolean }[]): Auth {
  const auth = new Auth();
  auth.apply({ enabled: true, keys: keys.map((key) => ({ name: key.name, sha256: apiKeyDigest(key.key), admin: key.admin ?? false })) });
  return auth;
}

function refusedWith(fn: () => unknown, status: number): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof RunnelError);
    assert.equal(error.code, "RUNNEL_ERR_UNAUTHORIZED");
    assert.equal(error.httpStatus, status);
    return true;
  });
}

describe("admin keys (the console's inspector)", () => {
  test("an admin key is identified as such; any other valid key is a 403, a missing or unknown one a 401", () => {
    const auth = withKeys({ name: "app", key: APP_KEY }, { name: "ops", key: OPS_KEY, admin: true });
    assert.equal(auth.adminKeys, 1);
    assert.equal(auth.identifyAdmin({ authorization: `Bearer ${OPS_KEY}` }), "ops");
    assert.equal(auth.identifyAdmin({ "x-api-key": OPS_KEY }), "ops");
    refusedWith(() => auth.identifyAdmin({ authorization: `Bearer ${APP_KEY}` }), 403);
    refusedWith(() => auth.identifyAdmin({}), 401);
    refusedWith(() => auth.identifyAdmin({ authorization: "Bearer sk-not-a-key-of-this-gateway" }), 401);
    // An admin key is still a key for the API.
    assert.equal(auth.identify({ authorization: `Bearer ${OPS_KEY}` }), "ops");
  });

  test("no admin key configured: there are none to match", () => {
    const auth = withKeys({ name: "app", key: APP_KEY });
    assert.equal(auth.adminKeys, 0);
    refusedWith(() => auth.identifyAdmin({ authorization: `Bearer ${APP_KEY}` }), 403);
  });

  test("a key turned into an admin key (or back) is a change of keys", () => {
    const auth = withKeys({ name: "ops", key: OPS_KEY });
    const promoted = auth.apply({ enabled: true, keys: [{ name: "ops", sha256: apiKeyDigest(OPS_KEY), admin: true }] });
    assert.equal(promoted.changed, true);
    assert.equal(auth.identifyAdmin({ authorization: `Bearer ${OPS_KEY}` }), "ops");
    const same = auth.apply({ enabled: true, keys: [{ name: "ops", sha256: apiKeyDigest(OPS_KEY), admin: true }] });
    assert.equal(same.changed, false);
    assert.equal(auth.apply({ enabled: true, keys: [{ name: "ops", sha256: apiKeyDigest(OPS_KEY), admin: false }] }).changed, true);
    refusedWith(() => auth.identifyAdmin({ authorization: `Bearer ${OPS_KEY}` }), 403);
  });

  test("auth off: no admin keys, and identifyAdmin lets the caller decide", () => {
    const auth = new Auth();
    auth.apply({ enabled: false, keys: [] });
    assert.equal(auth.adminKeys, 0);
    assert.equal(auth.identifyAdmin({}), "");
  });

  test("before the first snapshot nothing is identified", () => {
    assert.throws(
      () => new Auth().identifyAdmin({ authorization: `Bearer ${OPS_KEY}` }),
      (error: unknown) => error instanceof RunnelError && error.code === "RUNNEL_ERR_NOT_READY",
    );
  });
});
