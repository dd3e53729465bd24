#!/usr/bin/env node
/**
 * `runnel`, the admin CLI (`npm run -s runnel -- <command>`): lists, reads and
 * cancels streams, shows providers, routes and workers, drains a worker, by
 * calling the control plane's StreamAdminService on any replica. `runnel
 * --help` lists the commands; admin-cli.ts has the logic.
 */
import { ControlPlaneLink, createLogger } from "@runnel/shared/runtime";
import { EXIT_USAGE, parseInvocation, runCommand, USAGE, UsageError } from "./admin-cli.js";

function write(stream: NodeJS.WriteStream, text: string): Promise<void> {
  return new Promise((resolve) => (text ? stream.write(text, () => resolve()) : resolve()));
}

let exitCode: number;
try {
  const invocation = parseInvocation(process.argv.slice(2), process.env);
  const link = new ControlPlaneLink(invocation.url, createLogger("runnel-cli", "silent"));
  const outcome = await runCommand(invocation, link);
  link.close();
  await write(process.stdout, outcome.stdout);
  await write(process.stderr, outcome.stderr);
  exitCode = outcome.exitCode;
} catch (error) {
  if (error instanceof UsageError) {
    await write(process.stderr, `runnel: ${error.message}\n\n${USAGE}`);
    exitCode = EXIT_USAGE;
  } else {
    // A target grpc-js cannot parse, say.
    await write(process.stderr, `runnel: ${error instanceof Error ? error.message : String(error)}\n`);
    exitCode = 1;
  }
}
process.exit(exitCode);
