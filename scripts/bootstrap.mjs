// Bootstrap shared by `npm start` and `npm test` on a fresh clone:
// installs npm dependencies when missing or stale, makes sure a nats-server
// binary exists, and builds every workspace. Plain Node, no dependencies:
// it runs before anything is installed.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { accessSync, constants, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../", import.meta.url));
/** The nats-server release the chart deploys; `go install` builds this one when nothing else is available. */
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
    .update(existsSync(lock) ? readFileSync(lock) : "")
    .digest("hex");
  if (existsSync(marker) && readFileSync(marker, "utf8") === wanted) return;
  // `npm install` (not `npm ci`) even in CI: it installs exactly the lock file's
  // versions too, and npm 11 records only this platform's optional binaries
  // (Biome, buf) in the lock, which `npm ci` then rejects as out of sync.
  log("installing npm dependencies (npm install)");
  run("npm", ["install", "--no-audit", "--no-fund"]);
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

/** Finds nats-server: NATS_SERVER_BIN, PATH, .tools/bin; else installs it (apt as root, else go install). */
export function ensureNatsServer() {
  const found =
    process.env.NATS_SERVER_BIN || onPath("nats-server") || (existsSync(join(TOOLS_BIN, "nats-server")) ? join(TOOLS_BIN, "nats-server") : undefined);
  if (found) return found;
  if (isRoot() && onPath("apt-get")) {
    log("nats-server not found; installing Debian's nats-server package");
    const quiet = { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } };
    try {
      run("apt-get", ["install", "-y", "-q", "nats-server"], quiet);
    } catch {
      run("apt-get", ["update", "-q"], quiet);
      run("apt-get", ["install", "-y", "-q", "nats-server"], quiet);
    }
    const installed = onPath("nats-server") || (existsSync("/usr/bin/nats-server") ? "/usr/bin/nats-server" : undefined);
    if (installed) return installed;
  }
  if (onPath("go")) {
    log(`nats-server not found; building ${NATS_SERVER_VERSION} with go install into .tools/bin`);
    mkdirSync(TOOLS_BIN, { recursive: true });
    run("go", ["install", `github.com/nats-io/nats-server/v2@${NATS_SERVER_VERSION}`], { env: { ...process.env, GOBIN: TOOLS_BIN, CGO_ENABLED: "0" } });
    return join(TOOLS_BIN, "nats-server");
  }
  throw new Error(
    "nats-server is not installed and cannot be installed here: install Debian's nats-server package, or Go, or set NATS_URL to an existing server",
  );
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
}

/** Everything a fresh clone needs. Returns the nats-server binary path (undefined when NATS_URL is set). */
export function bootstrap() {
  npmDependencies();
  const natsServer = process.env.NATS_URL ? undefined : ensureNatsServer();
  if (natsServer) {
    const version = execFileSync(natsServer, ["--version"], { encoding: "utf8" }).trim();
    log(`using ${natsServer} (${version})`);
  }
  build();
  return { natsServer };
}
