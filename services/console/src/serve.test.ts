import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from "node:zlib";
import Fastify, { type FastifyInstance } from "fastify";
import { ASSET_CACHE_CONTROL, contentSecurityPolicy, PAGE_CACHE_CONTROL, registerConsole } from "./serve.js";

/** A build output as build.mjs writes it, small enough to read in a test. */
function fakeBuild(): string {
  const dir = mkdtempSync(join(tmpdir(), "runnel-console-"));
  mkdirSync(join(dir, "assets"));
  const files: Record<string, string> = {
    "index.html": '<!doctype html><script type="module" src="/console/assets/playground-AAAA.js"></script>',
    "streams.html": "<!doctype html><title>inspector</title>",
    "assets/playground-AAAA.js": `console.log(${JSON.stringify("x".repeat(2000))});`,
  };
  const manifest: Record<string, { bytes: number; gzip: number; brotli: number }> = {};
  for (const [path, text] of Object.entries(files)) {
    const bytes = Buffer.from(text);
    writeFileSync(join(dir, path), bytes);
    writeFileSync(join(dir, `${path}.gz`), gzipSync(bytes));
    writeFileSync(join(dir, `${path}.br`), brotliCompressSync(bytes));
    manifest[path] = { bytes: bytes.length, gzip: 0, brotli: 0 };
  }
  writeFileSync(join(dir, "manifest.json"), JSON.stringify({ files: manifest }));
  return dir;
}

describe("registerConsole", () => {
  let dir: string;
  let app: FastifyInstance;

  before(async () => {
    dir = fakeBuild();
    app = Fastify();
    assert.deepEqual(registerConsole(app, { assetsDir: dir }), { built: true, files: 3 });
    await app.ready();
  });
  after(async () => {
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the playground is at /, revalidated every time, with a strict CSP naming this origin's WebSocket", async () => {
    const response = await app.inject({ url: "/", headers: { host: "gateway.example:8080" } });
    assert.equal(response.statusCode, 200);
    assert.equal(response.headers["content-type"], "text/html; charset=utf-8");
    assert.equal(response.headers["cache-control"], PAGE_CACHE_CONTROL);
    const csp = String(response.headers["content-security-policy"]);
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self';/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    assert.match(csp, /connect-src 'self' ws:\/\/gateway\.example:8080 wss:\/\/gateway\.example:8080/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(response.headers["x-content-type-options"], "nosniff");
    assert.match(response.body, /playground-AAAA\.js/);
  });

  test("a Host that is not a host name adds no WebSocket source", () => {
    assert.doesNotMatch(contentSecurityPolicy("evil.example; script-src *"), /evil/);
    assert.match(contentSecurityPolicy("[::1]:8080"), /ws:\/\/\[::1\]:8080/);
    assert.match(contentSecurityPolicy(undefined), /connect-src 'self';/);
  });

  test("hashed assets are immutable, compressed as the client accepts, and revalidate with their ETag", async () => {
    const url = "/console/assets/playground-AAAA.js";
    const plain = await app.inject({ url, headers: { "accept-encoding": "identity" } });
    assert.equal(plain.statusCode, 200);
    assert.equal(plain.headers["cache-control"], ASSET_CACHE_CONTROL);
    assert.equal(plain.headers["content-type"], "text/javascript; charset=utf-8");
    assert.equal(plain.headers["content-encoding"], undefined);
    assert.equal(plain.headers.vary, "accept-encoding");
    const gzip = await app.inject({ url, headers: { "accept-encoding": "gzip, br;q=0" } });
    assert.equal(gzip.headers["content-encoding"], "gzip");
    assert.equal(gunzipSync(gzip.rawPayload).toString(), plain.body);
    const brotli = await app.inject({ url, headers: { "accept-encoding": "gzip, deflate, br" } });
    assert.equal(brotli.headers["content-encoding"], "br");
    assert.equal(brotliDecompressSync(brotli.rawPayload).toString(), plain.body);
    assert.ok(brotli.rawPayload.length < plain.rawPayload.length / 4);
    // Each encoding is its own representation, with its own ETag.
    assert.notEqual(brotli.headers.etag, plain.headers.etag);
    const again = await app.inject({ url, headers: { "accept-encoding": "br", "if-none-match": String(brotli.headers.etag) } });
    assert.equal(again.statusCode, 304);
    assert.equal(again.body, "");
  });

  test("an asset the build did not make is a 404; /console goes to the inspector", async () => {
    assert.equal((await app.inject({ url: "/console/assets/nope.js" })).statusCode, 404);
    assert.equal((await app.inject({ url: "/console/assets/..%2Fmanifest.json" })).statusCode, 404);
    const redirect = await app.inject({ url: "/console" });
    assert.equal(redirect.statusCode, 302);
    assert.equal(redirect.headers.location, "/console/streams");
    const inspector = await app.inject({ url: "/console/streams" });
    assert.equal(inspector.statusCode, 200);
    assert.match(String(inspector.headers["content-security-policy"]), /default-src 'self'/);
  });
});

test("without a build, / says how to make one and the app still starts", async () => {
  const app = Fastify();
  const warnings: string[] = [];
  const assets = registerConsole(app, { assetsDir: join(tmpdir(), "runnel-console-nowhere"), log: { warn: (_object, message) => warnings.push(message) } });
  assert.deepEqual(assets, { built: false, files: 0 });
  assert.equal(warnings.length, 1);
  const response = await app.inject({ url: "/" });
  assert.equal(response.statusCode, 503);
  assert.match(response.body, /npm run build/);
  await app.close();
});
