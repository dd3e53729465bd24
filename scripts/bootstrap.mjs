// Bootstrap shared by `npm start` and `npm test` on a fresh clone:
// installs npm dependencies when missing or stale, makes sure a nats-server
// binary exists, and builds every workspace. Plain Node, no dependencies:
// it runs before anything is installed.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { accessSync, constants, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../", import.meta.url));
/** The nats-server release the chart deploys (charts/runnel/values.yaml; a test checks they agree); the bootstrap builds it when no recent enough one is found. */
export const NATS_SERVER_VERSION = "v2.15.2";
const TOOLS_BIN = join(ROOT, ".tools", "bin");

function log(message) {
  process.stderr.write(`[bootstrap] ${message}\n`);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { cwd: ROOT, stdio: "inherit", ...options });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} exited with ${result.status}`);
}

function npmDependencies() {
  const lock = join(ROOT, "package-lock.json");
  const marker = join(ROOT, "node_modules", ".runnel-installed");
  const wanted = createHash("sha256")
    .update(readFileSync(join(ROOT, "package.json")))
    .update(readFileSync(lock))
    .digest("hex");
  if (existsSync(marker) && readFileSync(marker, "utf8") === wanted) return;
  // Exactly the committed lock file, which is left as it is: a fresh clone
  // stays clean, and every machine installs the same versions. The lock
  // records every platform's optional binaries (Biome, buf), which `npm ci`
  // needs; regenerate it with a plain `npm install` after changing a
  // dependency, and commit it.
  log("installing npm dependencies (npm ci, from package-lock.json)");
  run("npm", ["ci", "--no-audit", "--no-fund"]);
  writeFileSync(marker, wanted);
}

function onPath(name) {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function isRoot() {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/** The version a nats-server binary reports ("v2.15.2"), or undefined when it does not run. */
function natsServerVersion(binary) {
  try {
    const match = /v?(\d+)\.(\d+)\.(\d+)/.exec(execFileSync(binary, ["--version"], { encoding: "utf8" }));
    return match ? { text: `v${match[1]}.${match[2]}.${match[3]}`, major: Number(match[1]), minor: Number(match[2]) } : undefined;
  } catch {
    return undefined;
  }
}

/** At least the major.minor of the release the chart deploys: tests and `npm start` run what production runs. */
function recentEnough(version) {
  const [major, minor] = NATS_SERVER_VERSION.slice(1).split(".").map(Number);
  return version !== undefined && (version.major > major || (version.major === major && version.minor >= minor));
}

/**
 * Finds nats-server at least as recent as the release the chart deploys
 * (NATS_SERVER_VERSION's minor): NATS_SERVER_BIN, else the PATH, else
 * .tools/bin; else builds that release with `go install` into .tools/bin
 * (once; cached there). An older server on the PATH (Debian's is 2.9) is
 * passed over, saying so.
 */
export function ensureNatsServer() {
  const explicit = process.env.NATS_SERVER_BIN;
  if (explicit) {
    const version = natsServerVersion(explicit);
    if (recentEnough(version)) return explicit;
    throw new Error(
      `NATS_SERVER_BIN=${explicit} is ${version?.text ?? "not a runnable nats-server"}; Runnel needs ${NATS_SERVER_VERSION} or a later release (unset it to have the bootstrap build ${NATS_SERVER_VERSION})`,
    );
  }
  const cached = join(TOOLS_BIN, "nats-server");
  for (const candidate of [onPath("nats-server"), existsSync(cached) ? cached : undefined]) {
    if (!candidate) continue;
    const version = natsServerVersion(candidate);
    if (recentEnough(version)) return candidate;
    log(`${candidate} is ${version?.text ?? "not runnable"}, older than the ${NATS_SERVER_VERSION} the chart deploys; not using it`);
  }
  if (!onPath("go")) {
    throw new Error(
      `nats-server ${NATS_SERVER_VERSION} (or a later release) is needed and Go is not installed to build it: install Go, put nats-server ${NATS_SERVER_VERSION} on the PATH, or set NATS_URL to an existing server`,
    );
  }
  log(`building nats-server ${NATS_SERVER_VERSION} with go install into .tools/bin (once)`);
  mkdirSync(TOOLS_BIN, { recursive: true });
  run("go", ["install", `github.com/nats-io/nats-server/v2@${NATS_SERVER_VERSION}`], { env: { ...process.env, GOBIN: TOOLS_BIN, CGO_ENABLED: "0" } });
  return cached;
}

/** The Helm release the chart tests use when no `helm` is on the PATH (`go list -m -versions helm.sh/helm/v3`). */
export const HELM_VERSION = "v3.22.0";
/** kubeconform validates rendered objects against the schemas vendored in charts/runnel/tests/schemas (never downloaded). */
export const KUBECONFORM_VERSION = "v0.7.0";

/** A Go tool from PATH, else .tools/bin, else built once with `go install` into .tools/bin. */
function ensureGoTool(name, module, version) {
  const found = onPath(name) || (existsSync(join(TOOLS_BIN, name)) ? join(TOOLS_BIN, name) : undefined);
  if (found) return found;
  if (!onPath("go")) throw new Error(`${name} is not installed and Go is not available to build it: install ${name} ${version} or Go`);
  log(`${name} not found; building ${version} with go install into .tools/bin (once; a few minutes)`);
  mkdirSync(TOOLS_BIN, { recursive: true });
  run("go", ["install", `${module}@${version}`], { env: { ...process.env, GOBIN: TOOLS_BIN, CGO_ENABLED: "0" } });
  return join(TOOLS_BIN, name);
}

/** Finds helm (PATH, .tools/bin) or builds HELM_VERSION into .tools/bin. Returns its path. */
export function ensureHelm() {
  return ensureGoTool("helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION);
}

/** Finds kubeconform (PATH, .tools/bin) or builds KUBECONFORM_VERSION into .tools/bin. Returns its path. */
export function ensureKubeconform() {
  return ensureGoTool("kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform", KUBECONFORM_VERSION);
}

/**
 * A Python virtualenv with the test-only Python clients (the `openai`
 * package), pinned in test/python/requirements.txt. Reinstalled when that
 * file changes. Returns the interpreter's path.
 */
export function ensurePythonClients() {
  const venv = join(ROOT, ".tools", "venv");
  const python = join(venv, "bin", "python");
  const requirements = join(ROOT, "test", "python", "requirements.txt");
  const marker = join(venv, ".runnel-installed");
  const wanted = createHash("sha256").update(readFileSync(requirements)).digest("hex");
  if (existsSync(python) && existsSync(marker) && readFileSync(marker, "utf8") === wanted) return python;
  const system = onPath("python3");
  if (!system) throw new Error("python3 is needed for the Python client tests: install it");
  log("creating .tools/venv with the Python test clients");
  run(system, ["-m", "venv", venv]);
  run(python, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements]);
  writeFileSync(marker, wanted);
  return python;
}

/**
 * Jaeger v2, the trace backend `npm start` runs and the console's test reads
 * traces from: packages/launcher/jaeger/go.mod pins it (Jaeger's own go.mod
 * has replace directives, so `go install <path>@<version>` refuses it; it is
 * built as a tool of that module). The build has no web UI: the console's
 * inspector draws the traces from its query API.
 */
const JAEGER_MODULE_DIR = join(ROOT, "packages", "launcher", "jaeger");
const JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger";

/** A jaeger binary on the PATH, else in .tools/bin. */
export function findJaeger() {
  const cached = join(TOOLS_BIN, "jaeger");
  return onPath("jaeger") || (existsSync(cached) ? cached : undefined);
}

function jaegerBuild(output) {
  return { args: ["build", "-C", JAEGER_MODULE_DIR, "-trimpath", "-o", output, JAEGER_PACKAGE], env: { ...process.env, CGO_ENABLED: "0" } };
}

/**
 * Finds jaeger (PATH, .tools/bin) or builds it into .tools/bin, waiting
 * (once; about 3 to 6 minutes on a 2-core machine with nothing downloaded
 * yet). For `npm test`. Returns its path; undefined without Go.
 */
export function ensureJaeger() {
  const found = findJaeger();
  if (found) return found;
  if (!onPath("go")) {
    log("jaeger not found and Go is not installed to build it: the console's trace test will say so");
    return undefined;
  }
  log("jaeger not found; building it from its Go module into .tools/bin (once; a few minutes)");
  mkdirSync(TOOLS_BIN, { recursive: true });
  const partial = join(TOOLS_BIN, "jaeger.partial");
  const { args, env } = jaegerBuild(partial);
  run("go", args, { env });
  renameSync(partial, join(TOOLS_BIN, "jaeger"));
  return join(TOOLS_BIN, "jaeger");
}

/**
 * For `npm start`, which does not wait for it: builds Jaeger in the
 * background, at a low priority, logging to .runnel/jaeger-build.log.
 * Returns the build (its process, a promise of the binary's path, `kill`
 * for its whole process group) or undefined without Go. npm start stops it
 * when it stops; Go's build cache keeps what was compiled, so the next start
 * carries on from there.
 */
export function buildJaegerInBackground(niceness = 10) {
  if (!onPath("go")) return undefined;
  mkdirSync(TOOLS_BIN, { recursive: true });
  mkdirSync(join(ROOT, ".runnel"), { recursive: true });
  const logPath = join(ROOT, ".runnel", "jaeger-build.log");
  const output = openSync(logPath, "w");
  const partial = join(TOOLS_BIN, `jaeger.partial-${process.pid}`);
  const { args, env } = jaegerBuild(partial);
  const nice = onPath("nice");
  // Its own process group, so that stopping it stops the compilers it runs too (go leaves them running otherwise).
  const options = { cwd: ROOT, env, stdio: ["ignore", output, output], detached: true };
  const child = nice ? spawn(nice, ["-n", String(niceness), "go", ...args], options) : spawn("go", args, options);
  const done = new Promise((resolve) => {
    child.once("error", () => resolve(undefined));
    child.once("exit", (code) => {
      if (code !== 0) {
        rmSync(partial, { force: true });
        resolve(undefined);
        return;
      }
      const binary = join(TOOLS_BIN, "jaeger");
      renameSync(partial, binary);
      resolve(binary);
    });
  });
  const kill = (signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  return { process: child, done, log: logPath, kill };
}

/** The browser test drives the system's Chromium and never downloads one. */
export const CHROMIUM_BIN = "/usr/bin/chromium";

/**
 * Installs Debian's chromium package when /usr/bin/chromium is missing (as
 * root, with apt-get). Elsewhere it only says so: nothing but the browser
 * test needs it, and that test fails with the same advice.
 */
export function ensureChromium() {
  if (existsSync(CHROMIUM_BIN)) return CHROMIUM_BIN;
  if (!isRoot() || !onPath("apt-get")) {
    log(`${CHROMIUM_BIN} not found and not installable here (needs root and apt-get): install Debian's chromium package for the browser test`);
    return undefined;
  }
  log("chromium not found; installing Debian's chromium package (for the browser test)");
  const quiet = { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } };
  try {
    try {
      run("apt-get", ["install", "-y", "-q", "chromium"], quiet);
    } catch {
      run("apt-get", ["update", "-q"], quiet);
      run("apt-get", ["install", "-y", "-q", "chromium"], quiet);
    }
  } catch (error) {
    log(`installing chromium failed: ${error.message}`);
  }
  return existsSync(CHROMIUM_BIN) ? CHROMIUM_BIN : undefined;
}

export function build() {
  log("building (tsc -b)");
  run(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-b"]);
  // The web console's pages and assets (esbuild), which the ingress serves from services/console/dist/public.
  run(process.execPath, [join(ROOT, "services", "console", "build.mjs")]);
}

/** Everything a fresh clone needs. Returns the nats-server binary path (undefined when NATS_URL is set). */
export function bootstrap() {
  npmDependencies();
  const natsServer = process.env.NATS_URL ? undefined : ensureNatsServer();
  if (natsServer) {
    log(`using nats-server ${natsServerVersion(natsServer)?.text ?? "(version unknown)"} at ${natsServer}`);
  }
  build();
  return { natsServer };
}
