/**
 * The shape of the code, checked: @runnel/shared's pure surfaces
 * (`/contracts`, `/domain`) load no client library at run time; the pure
 * modules of the services (encoders, request parsers, wires, the route
 * runner) depend only on them; and the names on the bus are spelled in
 * subjects.ts alone. Read from the compiled JavaScript, where type-only
 * imports are gone: what is left is what loads.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "@runnel/launcher";

const SHARED_DIST = join(REPO_ROOT, "packages", "shared", "dist");
/** Libraries that do I/O or hold a connection: not for the pure surfaces. */
const RUNTIME_LIBRARIES = /^(@grpc\/|@nats-io\/|@opentelemetry\/|pino|undici|fastify|ws$|import-in-the-middle)/;

/** The bare specifiers a compiled module loads, following its relative imports. */
function loads(entry: string): { files: string[]; packages: Set<string> } {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = readFileSync(file, "utf8");
    for (const match of text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"|^\s*import\s+"([^"]+)"/gm)) {
      const specifier = match[1] ?? match[2] ?? "";
      if (specifier.startsWith(".")) visit(resolve(dirname(file), specifier));
      else packages.add(specifier);
    }
  };
  visit(entry);
  return { files: [...seen].map((file) => relative(REPO_ROOT, file)), packages };
}

test("@runnel/shared/contracts and /domain load no NATS, gRPC, OpenTelemetry, pino or HTTP library", () => {
  for (const surface of ["contracts", "domain"]) {
    const { packages, files } = loads(join(SHARED_DIST, `${surface}.js`));
    const runtime = [...packages].filter((name) => RUNTIME_LIBRARIES.test(name));
    assert.deepEqual(runtime, [], `${surface} loads ${runtime.join(", ")} (through ${files.join(", ")})`);
  }
});

test("the services' pure modules depend on the pure surfaces only", () => {
  const pure = [
    "services/ingress/dist/openai-encoder.js",
    "services/ingress/dist/anthropic-encoder.js",
    "services/ingress/dist/responses-encoder.js",
    "services/ingress/dist/openai-request.js",
    "services/ingress/dist/anthropic-request.js",
    "services/ingress/dist/responses-request.js",
    "services/ingress/dist/wire.js",
    "services/ingress/dist/ws-protocol.js",
    "services/ingress/dist/stall-watch.js",
    "services/worker/dist/route-runner.js",
  ];
  for (const module of pure) {
    const { packages } = loads(join(REPO_ROOT, module));
    const impure = [...packages].filter((name) => name === "@runnel/shared" || name === "@runnel/shared/runtime" || RUNTIME_LIBRARIES.test(name));
    assert.deepEqual(impure, [], `${module} loads ${impure.join(", ")}`);
  }
});

test("subjects are spelled in packages/shared/src/subjects.ts only", () => {
  const offenders: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      if (entry === "node_modules" || entry === "dist" || entry === "gen") continue;
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (path.endsWith(".ts") && !path.endsWith(".test.ts") && !path.endsWith("subjects.ts")) {
        const text = readFileSync(path, "utf8");
        // A subject in a string literal or a template (comments name subjects in backticks, attributes are runnel.stream.id and the like).
        const subject =
          /"(runnel\.(?:jobs|ctl|health|console|usage)\.[^"]*|runnel\.stream\.[^"]*\.(?:events|signal|\*))"|'(runnel\.(?:jobs|ctl|health|console|usage)\.[^']*)'|`(runnel\.(?:stream|jobs|ctl|health|console|usage)\.[^`]*\$\{[^`]*)`/g;
        for (const match of text.matchAll(subject)) {
          offenders.push(`${relative(REPO_ROOT, path)}: ${match[1] ?? match[2] ?? match[3]}`);
        }
      }
    }
  };
  for (const dir of ["packages", "services"]) walk(join(REPO_ROOT, dir));
  assert.deepEqual(offenders, []);
});
