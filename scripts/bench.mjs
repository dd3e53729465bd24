// `npm run bench [-- --quick]`: the same bootstrap as `npm start` (dependencies,
// nats-server, build), then the benchmark (bench/dist/main.js). See docs/benchmarks.md.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { bootstrap, ROOT } from "./bootstrap.mjs";

const { natsServer } = bootstrap();
const env = { ...process.env, ...(natsServer ? { NATS_SERVER_BIN: natsServer } : {}) };
const child = spawn(process.execPath, [join(ROOT, "bench", "dist", "main.js"), ...process.argv.slice(2)], { cwd: ROOT, stdio: "inherit", env });
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
