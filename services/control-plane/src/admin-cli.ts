/**
 * The admin CLI's logic, free of I/O: parsing a command line, running a
 * command against an admin client, and rendering answers as tables (for
 * people) or JSON (for scripts). `cli.ts` wires it to the process.
 *
 * Exit codes: 0 success; 2 a usage error; 64 + the gRPC status code when a
 * call fails (as grpcurl does: 69 NOT_FOUND, 78 UNAVAILABLE, ...), also for
 * `workers drain` of a worker no one has seen (69).
 */
import { parseArgs } from "node:util";
import { status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { controlPlane, parseDuration } from "@runnel/shared/contracts";

const { StreamPhase, CircuitState } = controlPlane;

/** Where the CLI looks for the control plane when neither --url nor an environment variable says. */
export const DEFAULT_CONTROL_PLANE_URL = "127.0.0.1:50051";
export const EXIT_USAGE = 2;
/** Added to a gRPC status code to make the exit code. */
export const EXIT_STATUS_BASE = 64;

export const USAGE = `usage: runnel <command> [options]

commands:
  streams ls [--phase P] [--limit N]   list streams, newest first (P: queued, running, done, failed, cancelled)
  streams get <stream-id>              one stream's record
  streams cancel <stream-id> [--reason TEXT]
                                       cancel a stream (idempotent)
  providers                            providers, routes (circuits, error rate, TTFT, budgets) and workers
  workers [ls]                         live workers
  workers drain <worker-id>            tell a worker to take no new jobs and finish its streams

options:
  --url TARGET     control plane: host:port[,host:port...] or dns:///name:port
                   (default: RUNNEL_CONTROL_PLANE_URL, else CONTROL_PLANE_URL, else 127.0.0.1:$GRPC_PORT, else ${DEFAULT_CONTROL_PLANE_URL})
  --json           print JSON instead of tables
  --timeout DUR    deadline of the call, all replicas included (default 10s)
  -h, --help       this text

exit codes: 0 ok, 2 usage, 64 + gRPC status code when the call fails (69 not found, 78 unavailable)
`;

export type Command =
  | { readonly kind: "help" }
  | { readonly kind: "streams-ls"; readonly phase: controlPlane.StreamPhase; readonly limit: number }
  | { readonly kind: "streams-get"; readonly streamId: string }
  | { readonly kind: "streams-cancel"; readonly streamId: string; readonly reason: string }
  | { readonly kind: "providers" }
  | { readonly kind: "workers-ls" }
  | { readonly kind: "workers-drain"; readonly workerId: string };

export interface Invocation {
  readonly command: Command;
  readonly url: string;
  readonly json: boolean;
  readonly timeoutMs: number;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const PHASES: Record<string, controlPlane.StreamPhase> = {
  queued: StreamPhase.STREAM_PHASE_QUEUED,
  running: StreamPhase.STREAM_PHASE_RUNNING,
  done: StreamPhase.STREAM_PHASE_DONE,
  failed: StreamPhase.STREAM_PHASE_FAILED,
  cancelled: StreamPhase.STREAM_PHASE_CANCELLED,
};

/** Parses argv (without node and the script). Throws UsageError with a message for the user. */
export function parseInvocation(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Invocation {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  // GRPC_PORT: the port `npm start` was told to put its control plane on, in the same shell.
  const url = values.url || env.RUNNEL_CONTROL_PLANE_URL || env.CONTROL_PLANE_URL || (env.GRPC_PORT ? `127.0.0.1:${env.GRPC_PORT}` : DEFAULT_CONTROL_PLANE_URL);
  let timeoutMs = 10_000;
  if (values.timeout !== undefined) {
    try {
      timeoutMs = /^\d+$/.test(values.timeout) ? Number(values.timeout) : parseDuration(values.timeout);
    } catch {
      throw new UsageError(`--timeout: expected a duration such as 500ms, 10s or 1m, got "${values.timeout}"`);
    }
    if (timeoutMs <= 0) throw new UsageError("--timeout must be more than 0");
  }
  const base = { url, json: values.json === true, timeoutMs };
  if (values.help || positionals.length === 0) return { ...base, command: { kind: "help" } };

  const [noun, verb, argument, ...extra] = positionals;
  const only = (allowed: readonly string[]) => {
    for (const option of ["phase", "limit", "reason"] as const) {
      if (values[option] !== undefined && !allowed.includes(option))
        throw new UsageError(`--${option} does not apply to "${positionals.slice(0, 2).join(" ")}"`);
    }
    if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
  };
  const needId = (what: string) => {
    if (!argument) throw new UsageError(`"${noun} ${verb}" needs a ${what}`);
    return argument;
  };

  if (noun === "streams") {
    if (verb === "ls" || verb === "list") {
      only(["phase", "limit"]);
      if (argument) throw new UsageError(`unexpected argument "${argument}"`);
      const phaseName = values.phase?.toLowerCase();
      const phase = phaseName === undefined ? StreamPhase.STREAM_PHASE_UNSPECIFIED : PHASES[phaseName];
      if (phase === undefined) throw new UsageError(`--phase: one of ${Object.keys(PHASES).join(", ")}, got "${values.phase}"`);
      const limit = values.limit === undefined ? 100 : Number(values.limit);
      if (!Number.isInteger(limit) || limit <= 0) throw new UsageError(`--limit: a positive whole number, got "${values.limit}"`);
      return { ...base, command: { kind: "streams-ls", phase, limit } };
    }
    if (verb === "get") {
      only([]);
      return { ...base, command: { kind: "streams-get", streamId: needId("stream id") } };
    }
    if (verb === "cancel") {
      only(["reason"]);
      return { ...base, command: { kind: "streams-cancel", streamId: needId("stream id"), reason: values.reason ?? "cancelled by an operator" } };
    }
    throw new UsageError(verb ? `unknown command "streams ${verb}" (ls, get, cancel)` : `"streams" needs a command: ls, get, cancel`);
  }
  if (noun === "providers") {
    only([]);
    if (verb) throw new UsageError(`unexpected argument "${verb}"`);
    return { ...base, command: { kind: "providers" } };
  }
  if (noun === "workers") {
    if (verb === undefined || verb === "ls" || verb === "list") {
      only([]);
      if (argument) throw new UsageError(`unexpected argument "${argument}"`);
      return { ...base, command: { kind: "workers-ls" } };
    }
    if (verb === "drain") {
      only([]);
      return { ...base, command: { kind: "workers-drain", workerId: needId("worker id") } };
    }
    throw new UsageError(`unknown command "workers ${verb}" (ls, drain)`);
  }
  throw new UsageError(`unknown command "${noun}" (streams, providers, workers)`);
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      url: { type: "string" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      phase: { type: "string" },
      limit: { type: "string" },
      reason: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}

/** The admin calls the CLI makes (ControlPlaneLink provides them). */
export interface AdminClient {
  listStreams(request: controlPlane.ListStreamsRequest, deadlineMs: number): Promise<controlPlane.ListStreamsResponse>;
  getStream(streamId: string, deadlineMs: number): Promise<controlPlane.GetStreamResponse>;
  cancel(streamId: string, reason: string, deadlineMs: number): Promise<controlPlane.CancelStreamResponse>;
  getProviderStatus(deadlineMs: number): Promise<controlPlane.GetProviderStatusResponse>;
  drainWorker(workerId: string, deadlineMs: number): Promise<controlPlane.DrainWorkerResponse>;
}

export interface Outcome {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a parsed command. Never throws: a failed call becomes its status message and exit code. */
export async function runCommand(invocation: Invocation, client: AdminClient, now = Date.now()): Promise<Outcome> {
  const { command, json, timeoutMs } = invocation;
  const ok = (stdout: string): Outcome => ({ exitCode: 0, stdout, stderr: "" });
  try {
    switch (command.kind) {
      case "help":
        return ok(USAGE);
      case "streams-ls": {
        const { streams } = await client.listStreams({ phase: command.phase, limit: command.limit }, timeoutMs);
        return ok(json ? toJson({ streams: streams.map(streamJson) }) : renderStreams(streams, now));
      }
      case "streams-get": {
        const { stream } = await client.getStream(command.streamId, timeoutMs);
        if (!stream) return failure(GrpcStatus.NOT_FOUND, `no stream ${command.streamId}`);
        return ok(json ? toJson(streamJson(stream)) : renderStream(stream, now));
      }
      case "streams-cancel": {
        const { state, changed } = await client.cancel(command.streamId, command.reason, timeoutMs);
        if (json) return ok(toJson({ changed, state: state ? streamJson(state) : null }));
        const phase = state ? phaseName(state.phase) : "unknown";
        return ok(
          changed
            ? `cancelled ${command.streamId}${state?.owner ? ` (its worker ${state.owner} was told)` : " (it had not started; it never will)"}\n`
            : `${command.streamId} is already ${phase}; nothing to cancel\n`,
        );
      }
      case "providers": {
        const status = await client.getProviderStatus(timeoutMs);
        return ok(json ? toJson(providerStatusJson(status)) : renderProviderStatus(status, now));
      }
      case "workers-ls": {
        const status = await client.getProviderStatus(timeoutMs);
        return ok(json ? toJson({ workers: status.workers }) : renderWorkers(status.workers, now));
      }
      case "workers-drain": {
        const { found } = await client.drainWorker(command.workerId, timeoutMs);
        if (json) return { exitCode: found ? 0 : EXIT_STATUS_BASE + GrpcStatus.NOT_FOUND, stdout: toJson({ found }), stderr: "" };
        if (!found) return failure(GrpcStatus.NOT_FOUND, `no live worker ${command.workerId}`);
        return ok(`worker ${command.workerId} is draining: it takes no new jobs and finishes its running streams\n`);
      }
    }
  } catch (error) {
    if (isServiceError(error)) {
      const hint =
        error.code === GrpcStatus.UNAVAILABLE || error.code === GrpcStatus.DEADLINE_EXCEEDED
          ? `\n(control plane: ${invocation.url}; set --url or RUNNEL_CONTROL_PLANE_URL)`
          : "";
      // grpc-js ends an UNAVAILABLE with an empty "Resolution note: " when there is none.
      const details = (error.details || error.message).replace(/\s*Resolution note:\s*$/, "");
      return failure(error.code, `${details}${hint}`);
    }
    return { exitCode: 1, stdout: "", stderr: `runnel: ${error instanceof Error ? error.message : String(error)}\n` };
  }
}

function failure(code: GrpcStatus, message: string): Outcome {
  return { exitCode: EXIT_STATUS_BASE + code, stdout: "", stderr: `runnel: ${GrpcStatus[code] ?? code}: ${message}\n` };
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number";
}

function toJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Every field, with enum names: scripts should not have to know that absent means zero. */
function streamJson(state: controlPlane.StreamState) {
  return { ...state, phase: phaseName(state.phase) };
}

function providerStatusJson(status: controlPlane.GetProviderStatusResponse) {
  return { ...status, routes: status.routes.map((route) => ({ ...route, circuit: circuitName(route.circuit) })) };
}

export function phaseName(phase: controlPlane.StreamPhase): string {
  return controlPlane.streamPhaseToJSON(phase).replace("STREAM_PHASE_", "").toLowerCase();
}

export function circuitName(circuit: controlPlane.CircuitState): string {
  if (circuit === CircuitState.CIRCUIT_STATE_UNSPECIFIED) return "closed";
  return controlPlane.circuitStateToJSON(circuit).replace("CIRCUIT_STATE_", "").toLowerCase().replace("_", "-");
}

/** "3s", "4m", "2h", "5d" since `thenMs`; "-" when unknown. */
export function age(thenMs: number, now: number): string {
  if (!thenMs) return "-";
  const seconds = Math.max(0, Math.round((now - thenMs) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86_400)}d`;
}

/** Left-aligned columns two spaces apart. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join("  ")
      .trimEnd();
  return `${[line(headers), ...rows.map(line)].join("\n")}\n`;
}

export function renderStreams(streams: readonly controlPlane.StreamState[], now: number): string {
  if (streams.length === 0) return "no streams\n";
  return table(
    ["STREAM", "PHASE", "MODEL", "PROVIDER", "OWNER", "SEQ", "AGE", "ERROR/REASON"],
    streams.map((stream) => [
      stream.streamId,
      phaseName(stream.phase),
      stream.model || "-",
      stream.provider || "-",
      stream.owner || "-",
      String(stream.lastSeq),
      age(stream.createdAtMs, now),
      stream.errorCode || stream.cancelReason || "",
    ]),
  );
}

export function renderStream(stream: controlPlane.StreamState, now: number): string {
  const rows: [string, string][] = [
    ["stream", stream.streamId],
    ["phase", phaseName(stream.phase)],
    ["model", stream.model || "-"],
    ["provider", stream.provider || "-"],
    ["owner", stream.owner || "-"],
    ["key", stream.keyId || "-"],
    ["last seq", String(stream.lastSeq)],
    ["created", stream.createdAtMs ? `${new Date(stream.createdAtMs).toISOString()} (${age(stream.createdAtMs, now)} ago)` : "-"],
    ["updated", stream.updatedAtMs ? `${new Date(stream.updatedAtMs).toISOString()} (${age(stream.updatedAtMs, now)} ago)` : "-"],
  ];
  if (stream.errorCode) rows.push(["error", stream.errorCode]);
  if (stream.cancelReason) rows.push(["cancel reason", stream.cancelReason]);
  const width = Math.max(...rows.map(([label]) => label.length));
  return `${rows.map(([label, value]) => `${`${label}:`.padEnd(width + 2)}${value}`).join("\n")}\n`;
}

export function renderWorkers(workers: readonly controlPlane.WorkerStatus[], now: number): string {
  if (workers.length === 0) return "no live workers\n";
  return table(
    ["WORKER", "IN-FLIGHT", "CAPACITY", "DRAINING", "LAST SEEN"],
    workers.map((worker) => [
      worker.workerId,
      String(worker.inFlight),
      String(worker.capacity),
      worker.draining ? "yes" : "no",
      `${age(worker.lastSeenMs, now)} ago`,
    ]),
  );
}

export function renderProviderStatus(status: controlPlane.GetProviderStatusResponse, now: number): string {
  const providers = table(
    ["PROVIDER", "TYPE", "HEALTHY", "IN-FLIGHT"],
    status.providers.map((provider) => [provider.name, provider.type, provider.healthy ? "yes" : "no", String(provider.inFlight)]),
  );
  const routes =
    status.routes.length === 0
      ? "no routes\n"
      : table(
          ["PROVIDER", "MODEL", "CIRCUIT", "ERRORS", "TTFT", "IN-FLIGHT", "COOLDOWN", "REQ/MIN", "TOK/MIN"],
          status.routes.map((route) => [
            route.provider,
            route.model,
            circuitName(route.circuit),
            `${Math.round(route.errorRate * 100)}%`,
            route.ttftMs > 0 ? `${Math.round(route.ttftMs)}ms` : "-",
            String(route.inFlight),
            route.cooldownUntilMs > now ? `${Math.ceil((route.cooldownUntilMs - now) / 1000)}s` : "-",
            String(route.requestsLastMinute),
            String(route.tokensLastMinute),
          ]),
        );
  return `routing version ${status.routingVersion}\n\n${providers}\nroutes:\n${routes}\nworkers:\n${renderWorkers(status.workers, now)}`;
}
