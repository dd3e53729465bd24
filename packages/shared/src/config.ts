/**
 * Configuration, parsed and validated once at start. `runnel.yaml` (path in
 * RUNNEL_CONFIG) describes providers and models; environment variables
 * describe the process (ports, addresses). Nothing else in Runnel reads
 * `process.env`: services call `loadSettings()` in main.ts and pass the
 * frozen result down.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";

/** A duration: milliseconds as a number, or a string such as "250ms", "15s", "10m", "1h". */
const duration = z.union(
  [
    z.number().int().nonnegative(),
    z
      .string()
      .regex(/^\d+(ms|s|m|h)$/)
      .transform(parseDuration),
  ],
  {
    error: 'expected a duration such as "500ms", "15s", "10m" or "1h", or a number of milliseconds',
  },
);

export function parseDuration(text: string): number {
  const match = /^(\d+)(ms|s|m|h)$/.exec(text);
  if (!match) throw new Error(`not a duration: ${text}`);
  const value = Number(match[1]);
  const unit = match[2];
  return unit === "ms" ? value : unit === "s" ? value * 1000 : unit === "m" ? value * 60_000 : value * 3_600_000;
}

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]*$/, "letters, digits and . _ : / - only");

const timeouts = z
  .object({
    /** Time to establish the TCP/TLS connection. */
    connect: duration.default(10_000),
    /** Time from sending the request to the first token. */
    firstToken: duration.default(60_000),
    /** Longest silence between two tokens. */
    idle: duration.default(60_000),
    /** Whole-stream limit; 0 (the default) means none, so long generations are never cut. */
    total: duration.default(0),
  })
  .strict();

const retries = z
  .object({
    /** Attempts on one route before its failure goes to the routing layer, the first included (1 = no retry). */
    maxAttempts: z.number().int().min(1).max(10).default(3),
    /** No attempt starts later than this after the first one (a Retry-After beyond it ends the retries at once). */
    budget: duration.default(20_000),
    /** First backoff; it doubles per attempt, with jitter (half fixed, half random). */
    baseDelay: duration.default(200),
    /** Largest backoff between two attempts. */
    maxDelay: duration.default(4_000),
  })
  .strict();

const provider = z
  .object({
    name,
    type: z.enum(["openai", "openai-responses", "anthropic", "gemini", "mock"]),
    baseUrl: z.url({ protocol: /^https?$/ }),
    apiKey: z.string().optional(),
    headers: z.record(z.string(), z.string()).default({}),
    timeouts: timeouts.default(timeouts.parse({})),
    /** Retries before the first token (429 with Retry-After, 5xx, resets, connect errors); never for 400/401/403. */
    retries: retries.default(retries.parse({})),
    /** A chunk that fails validation: "skip" it (counted and logged) or "fail" the stream. */
    malformedChunks: z.enum(["skip", "fail"]).default("skip"),
    /**
     * Send W3C trace context (traceparent, tracestate) with every request, so
     * a provider that traces (vLLM, an OpenTelemetry-instrumented proxy) joins
     * the request's trace. false: the provider sees no trace headers.
     */
    propagateTrace: z.boolean().default(true),
    /** Provider quirks handled inside the adapter. */
    quirks: z
      .object({
        /** vLLM and other compatible servers continue a trailing assistant message (a prefill) only with continue_final_message. */
        continueFinalMessage: z.boolean().default(false),
      })
      .strict()
      .default({ continueFinalMessage: false }),
    /** Connection pool limit per worker. */
    maxConnections: z.number().int().positive().default(256),
    /** Budgets respected across all workers (from the shared outcome feed); absent: none. */
    limits: z
      .object({
        requestsPerMinute: z.number().int().positive().optional(),
        tokensPerMinute: z.number().int().positive().optional(),
      })
      .strict()
      .default({}),
    /** The circuit breaker of each of this provider's routes. */
    circuit: z
      .object({
        /** Consecutive failures (5xx, resets, timeouts) that open the circuit. */
        failureThreshold: z.number().int().positive().default(5),
        /** While open, one probe request per this interval; a successful probe closes it. */
        probeInterval: duration.default(10_000),
      })
      .strict()
      .default({ failureThreshold: 5, probeInterval: 10_000 }),
  })
  .strict();

const route = z
  .object({
    provider: name,
    model: z.string().min(1),
    weight: z.number().int().positive().default(1),
    /**
     * Lower is tried first; routes of the same priority share the load. Absent:
     * after every route listed above it (see effectivePriorities), so a list
     * without priorities is a failover order.
     */
    priority: z.number().int().nonnegative().max(1_000_000).optional(),
    /** Timeouts for this model on this provider; an unset one keeps the provider's (connect is the provider's alone). */
    timeouts: z.object({ firstToken: duration.optional(), idle: duration.optional(), total: duration.optional() }).strict().optional(),
    /** The route continues a trailing assistant message (needed by the `continue` policy). */
    acceptsPrefill: z.boolean().default(false),
    /** Context window in tokens; a context-length error fails over only to a route with a larger one. */
    contextWindow: z.number().int().positive().optional(),
  })
  .strict();

const model = z
  .object({
    name,
    routes: z.array(route).min(1, "a model needs at least one route"),
    /** How routes of the same priority share the load. */
    strategy: z.enum(["weighted", "least-inflight", "latency", "affinity"]).default("weighted"),
    /** What a failure after the first token does: an error event, a restart on the next route, or a continuation (prefill). */
    afterFirstToken: z.enum(["error", "restart", "continue"]).default("error"),
    /** Start the next route as well when no first token arrived within this time; absent: no hedging. */
    hedgeAfter: duration.optional(),
    failover: z
      .object({
        /** Routes one request may try, the first included. */
        maxRoutes: z.number().int().positive().max(16).default(3),
        /**
         * How long the wait for a first token may last before no further route
         * is started: from the request's start, or from the failure after the
         * first token that started a failover. Not a bound on a generation's length.
         */
        budget: duration.default(30_000),
        /** A content-policy rejection fails over to the next route instead of being returned. */
        onContentPolicy: z.boolean().default(false),
        /**
         * Retries on the same route before the first token (the provider's
         * `retries`): "last-resort" only when no other route of the model can
         * take the request then; "always" first, whatever else could serve (a
         * provider-side prompt cache worth the wait).
         */
        sameRouteRetries: z.enum(["last-resort", "always"]).default("last-resort"),
      })
      .strict()
      .default({ maxRoutes: 3, budget: 30_000, onContentPolicy: false, sameRouteRetries: "last-resort" }),
  })
  .strict();

const bus = z
  .object({
    /** How long the events log keeps a stream's events (the resume window). */
    eventsRetention: duration.default(10 * 60_000),
    /** Upper bound of the events log's size on disk. */
    eventsMaxBytes: z
      .number()
      .int()
      .positive()
      .default(1024 * 1024 * 1024),
    /** "file" survives a NATS restart; "memory" is faster. */
    eventsStorage: z.enum(["file", "memory"]).default("file"),
    /** A job not picked up within this time is dropped (the client has long given up). */
    jobMaxAge: duration.default(5 * 60_000),
    /** Ack deadline of a job; workers keep it alive while they generate. */
    jobAckWait: duration.default(30_000),
    /** How long a stream's record stays in the KV bucket. */
    streamRecordTtl: duration.default(60 * 60_000),
    /**
     * Upper bound of the object store holding large requests while their jobs
     * wait or run (docs/architecture.md, "Large requests"); a large request that
     * does not fit is refused with RUNNEL_ERR_OVERLOADED.
     */
    bodiesMaxBytes: z
      .number()
      .int()
      .positive()
      .default(1024 * 1024 * 1024),
  })
  .strict();

const worker = z
  .object({
    /** Streams one worker runs at once. */
    concurrency: z.number().int().positive().max(100_000).default(256),
    /** On SIGTERM, how long running streams may take to finish. */
    drainTimeout: duration.default(30_000),
  })
  .strict();

const ingress = z
  .object({
    /**
     * No streaming response is silent for longer than this: an SSE comment,
     * an NDJSON blank line, an Anthropic `ping` or a WebSocket ping fills any
     * quiet of this length (keep it under your proxies' idle timeout).
     */
    heartbeatInterval: duration.default(15_000),
    /**
     * When a streaming response's headers (with x-runnel-stream-id) go out
     * before its first event: once a provider has accepted the request and
     * worked on its first token this long, so a client can cancel during a
     * long time to first token; a later failure is an error event in the
     * stream. While no provider works on the request (queued, retrying,
     * failing over), a failure is still an HTTP status.
     */
    holdHeaders: duration.default(500),
    /** The longest the headers wait in any case (a job queued behind busy workers, long retries). */
    holdHeadersMax: duration.default(10_000),
    /** Bytes waiting in one client's socket before its reader pauses and later catches up from the log. */
    maxClientBufferBytes: z
      .number()
      .int()
      .positive()
      .default(1024 * 1024),
    /** Largest accepted request body (413 beyond). */
    bodyLimitBytes: z
      .number()
      .int()
      .positive()
      .default(8 * 1024 * 1024),
    /**
     * A client that disconnects without cancelling keeps its generation running
     * this long, so it can resume; then the provider request is aborted. 0: at once.
     */
    detachGrace: duration.default(3_000),
    /**
     * On SIGTERM, after SHUTDOWN_DELAY_MS, how long open streams may take to
     * finish here before the rest are handed to the client to resume on another
     * replica (an SSE reconnect hint, WebSocket close 1012).
     */
    drainTimeout: duration.default(10_000),
    /** Events a reader keeps in memory while its client is behind; past it, it catches up from the log. */
    readerBufferEvents: z.number().int().positive().max(65_536).default(256),
    /** A client that reads nothing at all for this long while events wait is cut off. */
    stuckClientTimeout: duration.default(5 * 60_000),
    /**
     * Browser origins (`https://app.example.com`, or `*` for any) allowed to
     * call the HTTP API cross-origin: preflights are answered and responses
     * carry the CORS headers. Absent or empty: no CORS headers at all.
     */
    corsOrigins: z.array(z.union([z.literal("*"), z.url({ protocol: /^https?$/ })])).optional(),
  })
  .strict();

const apiKey = z
  .object({
    /** A name for logs and stream ownership; never the key itself. */
    name,
    key: z.string().min(16, "an API key needs at least 16 characters"),
    /**
     * May also use the console's traffic inspector (`/console/streams`): see
     * every stream in flight and cancel any of them. Without an admin key the
     * inspector is disabled (docs/console.md).
     */
    admin: z.boolean().default(false),
  })
  .strict();

const auth = z
  .object({
    /** Keys accepted as `Authorization: Bearer <key>` (or `x-api-key` on the Anthropic API). */
    apiKeys: z.array(apiKey).min(1, "list at least one key, or remove the auth section to run open"),
    /**
     * Signs per-stream resume tokens. Every ingress replica needs the same
     * secret for a token issued by one to work on another.
     */
    resumeSecret: z.string().min(16, "the resume secret needs at least 16 characters").optional(),
  })
  .strict();

/** The web console the ingress serves (docs/console.md). */
const consoleSection = z
  .object({
    /** Serve the console: the playground at `/`, the traffic inspector at `/console/streams`. */
    enabled: z.boolean().default(true),
    /**
     * With no `auth` section, serve the traffic inspector (and its API: every
     * stream in flight, cancel any) to anyone who can reach the ingress. Off by
     * default; ignored when auth is on, where only admin keys may use it.
     */
    inspectorWithoutAuth: z.boolean().default(false),
  })
  .strict();

export const RunnelConfigSchema = z
  .object({
    providers: z.array(provider).min(1, "at least one provider is needed"),
    models: z.array(model).min(1, "at least one model is needed"),
    bus: bus.default(bus.parse({})),
    worker: worker.default(worker.parse({})),
    ingress: ingress.default(ingress.parse({})),
    /** Absent: the gateway is open (and says so loudly at start). */
    auth: auth.optional(),
    console: consoleSection.default(consoleSection.parse({})),
  })
  .strict()
  .superRefine((config, context) => {
    const providers = new Set<string>();
    config.providers.forEach((p, index) => {
      if (providers.has(p.name)) {
        context.addIssue({ code: "custom", path: ["providers", index, "name"], message: `duplicate provider name "${p.name}"` });
      }
      providers.add(p.name);
    });
    const models = new Set<string>();
    config.models.forEach((m, index) => {
      if (models.has(m.name)) {
        context.addIssue({ code: "custom", path: ["models", index, "name"], message: `duplicate model name "${m.name}"` });
      }
      models.add(m.name);
      m.routes.forEach((r, routeIndex) => {
        if (!providers.has(r.provider)) {
          context.addIssue({
            code: "custom",
            path: ["models", index, "routes", routeIndex, "provider"],
            message: `unknown provider "${r.provider}" (known: ${[...providers].join(", ")})`,
          });
        }
      });
    });
  });

export type RunnelConfig = z.infer<typeof RunnelConfigSchema>;
export type ProviderConfig = RunnelConfig["providers"][number];
export type ModelConfig = RunnelConfig["models"][number];

/** Raised when configuration is wrong; the message names the field and is meant for the operator. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/**
 * The config used when RUNNEL_CONFIG is unset: model `mock` served by the
 * mock provider, no auth, and the console's inspector open (a local demo, as
 * `npm start` runs it on 127.0.0.1; a runnel.yaml of your own keeps the
 * inspector closed unless it says otherwise).
 */
export const DEFAULT_CONFIG_YAML = `
providers:
  - name: mock
    type: mock
    baseUrl: http://\${MOCK_HOST:-127.0.0.1}:\${MOCK_PORT:-9001}/v1
models:
  - name: mock
    routes:
      - { provider: mock, model: mock }
console:
  inspectorWithoutAuth: true
`;

/**
 * Expands `${NAME}` and `${NAME:-default}` in every string value of the parsed
 * document (not in keys), so an error can name the field whose variable is missing.
 */
export function expandEnv(value: unknown, env: Readonly<Record<string, string | undefined>>, path: string[] = []): unknown {
  if (typeof value === "string") {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_match, variable: string, fallback?: string) => {
      const found = env[variable];
      if (found !== undefined && found !== "") return found;
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`${formatPath(path)}: environment variable ${variable} is not set (write \${${variable}:-default} to give a default)`);
    });
  }
  if (Array.isArray(value)) return value.map((item, index) => expandEnv(item, env, [...path, String(index)]));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, expandEnv(item, env, [...path, key])]));
  }
  return value;
}

function formatPath(path: ReadonlyArray<string | number | symbol>): string {
  if (path.length === 0) return "(root)";
  return path
    .map((part, index) => (typeof part === "number" || /^\d+$/.test(String(part)) ? `[${String(part)}]` : index === 0 ? String(part) : `.${String(part)}`))
    .join("");
}

/** Parses and validates config text. Throws ConfigError naming every wrong field. */
export function parseConfig(text: string, env: Readonly<Record<string, string | undefined>>, source = "runnel.yaml"): Readonly<RunnelConfig> {
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`${source}: not valid YAML: ${(error as Error).message}`);
  }
  const expanded = expandEnv(document ?? {}, env);
  const result = RunnelConfigSchema.safeParse(expanded);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `  - ${formatPath(issue.path)}: ${issue.message}`);
    throw new ConfigError(`${source} is invalid:\n${lines.join("\n")}`);
  }
  return deepFreeze(result.data);
}

/** Reads RUNNEL_CONFIG (or the default config) and validates it. */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Readonly<RunnelConfig> {
  const path = env.RUNNEL_CONFIG;
  if (!path) return parseConfig(DEFAULT_CONFIG_YAML, env, "default config");
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new ConfigError(`RUNNEL_CONFIG=${path}: cannot read the file: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  return parseConfig(text, env, path);
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    for (const item of Object.values(value)) deepFreeze(item);
    Object.freeze(value);
  }
  return value;
}

const port = z.coerce.number().int().min(0).max(65535);

/** Process settings from the environment, shared by every service. */
export const SettingsSchema = z.object({
  NATS_URL: z.string().default("nats://127.0.0.1:4222"),
  /** One or more control-plane addresses: "host:port[,host:port]" or a gRPC target such as "dns:///runnel-control-plane:50051". */
  CONTROL_PLANE_URL: z.string().default("127.0.0.1:50051"),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  HOST: z.string().default("0.0.0.0"),
  /** Ingress HTTP port. */
  PORT: port.default(8080),
  /** Control-plane gRPC port. */
  GRPC_PORT: port.default(50051),
  /** Health/readiness HTTP port of the control plane and the worker. */
  HEALTH_PORT: port.optional(),
  /** A separate port for GET /metrics; unset: the ingress serves it on PORT, the worker and the control plane on HEALTH_PORT. */
  METRICS_PORT: port.optional(),
  MOCK_PORT: port.default(9001),
  INSTANCE_ID: z.string().optional(),
  /** Worker concurrency override (else runnel.yaml `worker.concurrency`). */
  WORKER_CONCURRENCY: z.coerce.number().int().positive().optional(),
  /** Grace between failing readiness and closing listeners on SIGTERM. */
  SHUTDOWN_DELAY_MS: z.coerce.number().int().nonnegative().default(0),
  /**
   * OpenTelemetry. Tracing starts (the SDK is loaded at all) only when one of
   * these configures a trace exporter; the SDK itself reads every other OTEL_*
   * variable (protocol, headers, sampler, resource attributes).
   */
  OTEL_SDK_DISABLED: z.string().optional(),
  OTEL_TRACES_EXPORTER: z.string().optional(),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.string().optional(),
  /**
   * The query API of the trace backend the services export to (Jaeger's, e.g.
   * http://127.0.0.1:16686): the console's inspector draws a stream's trace
   * from it. Unset: no waterfall. `npm start` sets it when it runs Jaeger.
   */
  RUNNEL_TRACE_QUERY_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** A link to one trace in a trace viewer, `{traceId}` standing for the id (e.g. https://jaeger.example/trace/{traceId}). Unset: no link. */
  RUNNEL_TRACE_LINK: z
    .string()
    .regex(/^https?:\/\/\S*\{traceId\}\S*$/, "a http(s) URL with {traceId} in it")
    .optional(),
});

export type Settings = Readonly<z.infer<typeof SettingsSchema>>;

/**
 * Whether tracing is configured: the SDK is not disabled, and an OTLP endpoint
 * is set or OTEL_TRACES_EXPORTER names an exporter other than `none`. Without
 * it the services never load the SDK, so tracing costs nothing.
 */
export function tracingConfigured(settings: Settings): boolean {
  if (settings.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return false;
  const exporters = (settings.OTEL_TRACES_EXPORTER ?? "")
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name.length > 0);
  if (exporters.includes("none")) return false;
  return exporters.length > 0 || settings.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined || settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined;
}

export function loadSettings(env: Readonly<Record<string, string | undefined>>): Settings {
  // An empty variable means unset, as in \${VAR:-default}: never a port 0.
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ""));
  const result = SettingsSchema.safeParse(present);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `  - ${formatPath(issue.path)}=${String(env[String(issue.path[0])])}: ${issue.message}`);
    throw new ConfigError(`environment is invalid:\n${lines.join("\n")}`);
  }
  return Object.freeze(result.data);
}
