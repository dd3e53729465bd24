// `npm start`: bootstrap (dependencies, nats-server, build), then the whole
// stack on an embedded nats-server with the mock provider, until Ctrl-C.
// The launcher itself is packages/launcher (src/start.ts).
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { bootstrap, buildJaegerInBackground, ROOT } from "./bootstrap.mjs";

const { natsServer } = bootstrap();
if (natsServer) process.env.NATS_SERVER_BIN = natsServer;

const { start } = await import(pathToFileURL(join(ROOT, "packages", "launcher", "dist", "index.js")).href);
// npm runs scripts in the package root; INIT_CWD is where the user typed the command.
// Without a jaeger binary the stack starts at once and Jaeger is built beside it (the first time only).
await start({ argv: process.argv.slice(2), env: process.env, cwd: process.env.INIT_CWD || process.cwd(), buildJaeger: buildJaegerInBackground });
