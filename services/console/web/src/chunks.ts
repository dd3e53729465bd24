/**
 * The pieces of Runnel's public wire format the console reads: OpenAI
 * `chat.completion.chunk` objects with Runnel's `runnel.failover` extension,
 * the usage chunk, and the OpenAI error body (docs/api.md). Parsed
 * defensively: what the page shows comes from a network, not from a type.
 */

export interface Usage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
}

export interface RouteRef {
  readonly provider: string;
  readonly model: string;
}

export interface FailoverNote {
  readonly mode: string;
  readonly from: RouteRef | null;
  readonly to: RouteRef | null;
  readonly reasonCode: string;
  readonly reason: string;
  readonly takeover: boolean;
}

export interface ApiErrorBody {
  readonly code: string;
  readonly message: string;
}

/** What one chunk says, in the terms the playground uses. */
export interface ChunkFacts {
  /** Answer text (content, reasoning and tool-call arguments) this chunk adds. */
  readonly text: string;
  /** True when the chunk carries generated text (a token of the answer), as opposed to the role chunk, a finish or usage. */
  readonly isDelta: boolean;
  /** The upstream model named in the chunk. */
  readonly model: string | undefined;
  readonly finishReason: string | undefined;
  readonly usage: Usage | undefined;
  /** The usage chunk that follows the finish chunk: it shares the finish's position. */
  readonly usageTrailer: boolean;
  readonly failover: FailoverNote | undefined;
  /** True for the first chunk (the assistant role). */
  readonly role: boolean;
}

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function text(value: unknown): string {
  return typeof value === "string" ? value : "";
}

function route(value: unknown): RouteRef | null {
  const object = record(value);
  return object ? { provider: text(object.provider), model: text(object.model) } : null;
}

function usage(value: unknown): Usage | undefined {
  const object = record(value);
  if (!object) return undefined;
  const number = (field: string) => (typeof object[field] === "number" ? (object[field] as number) : 0);
  return { prompt_tokens: number("prompt_tokens"), completion_tokens: number("completion_tokens"), total_tokens: number("total_tokens") };
}

/** The facts of one parsed chunk object. */
export function chunkFacts(chunk: unknown): ChunkFacts {
  const object = record(chunk) ?? {};
  const choices = Array.isArray(object.choices) ? object.choices : [];
  const choice = record(choices[0]);
  const delta = record(choice?.delta) ?? {};
  let added = text(delta.content) + text(delta.reasoning_content);
  if (Array.isArray(delta.tool_calls)) {
    for (const call of delta.tool_calls) added += text(record(record(call)?.function)?.arguments);
  }
  const failover = record(record(object.runnel)?.failover);
  const finish = choice?.finish_reason;
  const reportedUsage = usage(object.usage);
  return {
    text: added,
    isDelta: added.length > 0 || Array.isArray(delta.tool_calls),
    model: typeof object.model === "string" ? object.model : undefined,
    finishReason: typeof finish === "string" ? finish : undefined,
    usage: reportedUsage,
    usageTrailer: choices.length === 0 && reportedUsage !== undefined,
    failover: failover
      ? {
          mode: text(failover.mode),
          from: route(failover.from),
          to: route(failover.to),
          reasonCode: text(failover.reason_code),
          reason: text(failover.reason),
          takeover: failover.takeover === true,
        }
      : undefined,
    role: delta.role === "assistant",
  };
}

/** The `{ error: { code, message } }` body of an error event or an HTTP error answer, if that is what this is. */
export function errorOf(value: unknown): ApiErrorBody | undefined {
  const error = record(record(value)?.error);
  if (!error) return undefined;
  return { code: text(error.code) || text(error.type) || "error", message: text(error.message) };
}
