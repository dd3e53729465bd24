// `npm test`: the same bootstrap as `npm start`, then every test (unit,
// component and end-to-end) with Node's test runner. Prints the spec report,
// then one summary line `N passed, N failed` and exits non-zero on failure.
import { spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { bootstrap, buildJaegerInBackground, ensureChromium, ensureHelm, ensureKubeconform, ensurePythonClients, findJaeger, ROOT } from "./bootstrap.mjs";

const { natsServer } = bootstrap();
// The console's test reads a stream's trace from a real Jaeger. Built (once; minutes on a fresh
// machine) in the background at the lowest priority while the other tools install and the tests
// run; the console's test runs last and waits for it.
const jaeger = findJaeger();
const jaegerBuild = jaeger ? undefined : buildJaegerInBackground(19);
if (jaegerBuild) process.stderr.write(`[test] building jaeger in the background (${jaegerBuild.log})\n`);
const python = ensurePythonClients();
const helm = ensureHelm();
const kubeconform = ensureKubeconform();
// Only the tests need a browser (the browser test), not npm start.
ensureChromium();

function findTests(dir, found = []) {
  for (const entry of readdirSync(dir)) {
    if (entry === "node_modules") continue;
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) findTests(path, found);
    else if (entry.endsWith(".test.js") && path.includes(`${join("dist")}`)) found.push(path);
  }
  return found;
}

const filter = process.argv.slice(2);
const files = ["packages", "services", "test"]
  .flatMap((dir) => findTests(join(ROOT, dir)))
  .filter((file) => filter.length === 0 || filter.some((f) => file.includes(f)))
  .sort()
  // Last: the console's test may wait for the Jaeger being built meanwhile.
  .sort((a, b) => Number(a.endsWith("console.test.js")) - Number(b.endsWith("console.test.js")));
if (files.length === 0) {
  process.stderr.write("no test files found\n");
  process.exit(1);
}

const reportDir = join(ROOT, ".runnel");
mkdirSync(reportDir, { recursive: true });
const tapFile = join(reportDir, "test-report.tap");
const args = [
  "--enable-source-maps",
  "--test",
  "--test-concurrency=2",
  "--test-timeout=120000",
  "--test-reporter=spec",
  "--test-reporter-destination=stdout",
  "--test-reporter=tap",
  `--test-reporter-destination=${tapFile}`,
  ...files,
];
process.stderr.write(`[test] ${files.length} test files: ${files.map((f) => relative(ROOT, f)).join(", ")}\n`);
const env = {
  ...process.env,
  RUNNEL_TEST_PYTHON: python,
  RUNNEL_TEST_HELM: helm,
  RUNNEL_TEST_KUBECONFORM: kubeconform,
  ...(jaeger ? { RUNNEL_TEST_JAEGER: jaeger } : {}),
  ...(jaegerBuild ? { RUNNEL_TEST_JAEGER_BUILD_LOG: jaegerBuild.log } : {}),
  ...(natsServer ? { NATS_SERVER_BIN: natsServer } : {}),
};
const child = spawn(process.execPath, args, { cwd: ROOT, stdio: "inherit", env });
const code = await new Promise((resolve) => child.on("exit", (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0))));
jaegerBuild?.kill("SIGTERM");

const tap = readFileSync(tapFile, "utf8");
const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, "m").exec(tap)?.[1] ?? 0);
const passed = count("pass");
const failed = count("fail") + count("cancelled");
const skipped = count("skipped") + count("todo");
process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}\n`);
process.exit(code !== 0 || failed > 0 || passed === 0 ? 1 : 0);
