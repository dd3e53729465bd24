/**
 * The OpenAI Responses API request (`POST /v1/responses`): validated with a
 * schema and mapped onto the normalised ChatRequest, so any provider can
 * serve it. Pure. docs/responses-api.md ("Wire shapes") is the reference for
 * every shape here.
 *
 * Served: `input` as a string or as items (messages with text and image
 * parts, `function_call`, `function_call_output`), `instructions`, function
 * `tools`, `tool_choice`, `max_output_tokens`, `temperature`, `top_p`,
 * `text.format` (text, JSON schema, JSON object), `reasoning` (effort and
 * summary), `metadata`, `user` / `safety_identifier`, and what the wiring
 * step acts on (`stream`, `store`, `background`, `previous_response_id`).
 * Accepted and not acted on, as they change nothing a client can rely on:
 * `parallel_tool_calls`, `include`, `stream_options`, `service_tier`,
 * `prompt_cache_key`, `prompt_cache_retention`, `max_tool_calls`,
 * `text.verbosity`, `truncation: "disabled"`, `top_logprobs: 0`, replayed
 * `reasoning` items (no provider-neutral place for them), and unknown
 * fields. Refused with the param named: hosted tools (web search, file
 * search, MCP, ...), input item types other than the above (`item_reference`
 * among them), `input_file` parts and images by `file_id`, `conversation`,
 * `prompt`, `truncation: "auto"`, `top_logprobs` above 0, `allowed_tools`
 * and hosted-tool `tool_choice`s.
 */
import { type ChatMessage, type ChatRequest, type ContentPart, RunnelError, type ToolCall } from "@runnel/shared/contracts";
import { type core, z } from "zod";
import type { ResponseEcho } from "./responses-encoder.js";

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const NAME_RULE = "letters, digits, _ and -, at most 64";

const inputText = z.object({ type: z.literal("input_text"), text: z.string() });
const outputText = z.object({ type: z.literal("output_text"), text: z.string() });
const refusal = z.object({ type: z.literal("refusal"), refusal: z.string() });
const inputImage = z
  .object({
    type: z.literal("input_image"),
    image_url: z.string().min(1).nullish(),
    file_id: z.string().nullish(),
    detail: z.enum(["auto", "low", "high"]).nullish(),
  })
  .superRefine((part, context) => {
    if (part.file_id != null)
      context.addIssue({ code: "custom", path: ["file_id"], message: "images by file_id are not supported: give image_url (http(s) or data:)" });
    else if (part.image_url == null) context.addIssue({ code: "custom", path: ["image_url"], message: "required" });
  });
const inputFile = z.object({ type: z.literal("input_file") }).superRefine((_part, context) => {
  context.addIssue({ code: "custom", path: ["type"], message: "input_file parts are not supported" });
});

const contentPart = z.discriminatedUnion("type", [inputText, outputText, refusal, inputImage, inputFile], {
  error: "expected a content part of type 'input_text', 'input_image', 'output_text' or 'refusal'",
});

const ITEM_STATUS = z.enum(["in_progress", "completed", "incomplete"]).nullish();

const messageItem = z.object({
  type: z.literal("message"),
  role: z.enum(["user", "assistant", "system", "developer"], "expected 'user', 'assistant', 'system' or 'developer'"),
  content: z.union([z.string(), z.array(contentPart)]),
  id: z.string().nullish(),
  status: ITEM_STATUS,
});

const functionCallItem = z.object({
  type: z.literal("function_call"),
  call_id: z.string().min(1),
  name: z.string().min(1),
  arguments: z.string(),
  id: z.string().nullish(),
  status: ITEM_STATUS,
});

const functionCallOutputItem = z.object({
  type: z.literal("function_call_output"),
  call_id: z.string().min(1),
  output: z.union([z.string(), z.array(contentPart)]),
  id: z.string().nullish(),
  status: ITEM_STATUS,
});

/** A reasoning item replayed from an earlier output: accepted, not sent anywhere (no provider-neutral place for it). */
const reasoningItem = z.object({
  type: z.literal("reasoning"),
  id: z.string().nullish(),
  summary: z.array(z.object({ type: z.literal("summary_text"), text: z.string() })).default([]),
  content: z.array(z.object({ type: z.string(), text: z.string() })).nullish(),
  encrypted_content: z.string().nullish(),
  status: ITEM_STATUS,
});

const SERVED_ITEMS = "'message', 'function_call', 'function_call_output' or 'reasoning'";

/** An input item. A message may leave out `type` (OpenAI's EasyInputMessage). */
const inputItem = z.preprocess(
  (value) =>
    value !== null && typeof value === "object" && !Array.isArray(value) && !("type" in value) && "role" in value ? { ...value, type: "message" } : value,
  z.discriminatedUnion("type", [messageItem, functionCallItem, functionCallOutputItem, reasoningItem], {
    error: (issue) =>
      issue.code === "invalid_union" && issue.note === "No matching discriminator"
        ? `input items of this type are not supported: expected ${SERVED_ITEMS}`
        : undefined,
  }),
);

const functionTool = z.object({
  type: z.literal("function", "only function tools are supported (hosted tools such as web search, file search or MCP are not)"),
  name: z.string().regex(NAME, NAME_RULE),
  description: z.string().nullish(),
  parameters: z.record(z.string(), z.unknown()).nullish(),
  strict: z.boolean().nullish(),
});

const TOOL_CHOICE = "expected 'none', 'auto', 'required' or {\"type\":\"function\",\"name\":...} (allowed_tools and hosted tools are not supported)";
const toolChoice = z.union(
  [z.enum(["none", "auto", "required"]), z.object({ type: z.literal("function", TOOL_CHOICE), name: z.string().min(1) })],
  TOOL_CHOICE,
);

const textFormat = z.discriminatedUnion(
  "type",
  [
    z.object({ type: z.literal("text") }),
    z.object({
      type: z.literal("json_schema"),
      name: z.string().regex(NAME, NAME_RULE),
      schema: z.record(z.string(), z.unknown()),
      description: z.string().nullish(),
      strict: z.boolean().nullish(),
    }),
    z.object({ type: z.literal("json_object") }),
  ],
  { error: "expected a format of type 'text', 'json_schema' or 'json_object'" },
);

const metadata = z
  .record(z.string().max(64, "keys are at most 64 characters"), z.string().max(512, "values are at most 512 characters"))
  .refine((value) => Object.keys(value).length <= 16, "at most 16 key-value pairs");

const notSupported = (message: string) => z.null(message).optional();

export const ResponsesRequestSchema = z.object({
  model: z.string().min(1),
  input: z.union([z.string(), z.array(inputItem).min(1, "at least one input item is required")], {
    error: (issue) => (issue.input === undefined ? "required" : "expected a string or an array of input items"),
  }),
  instructions: z.string().nullish(),
  max_output_tokens: z.number().int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  tools: z.array(functionTool).nullish(),
  tool_choice: toolChoice.nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  text: z.object({ format: textFormat.nullish(), verbosity: z.enum(["low", "medium", "high"]).nullish() }).nullish(),
  reasoning: z
    .object({
      effort: z.enum(["none", "minimal", "low", "medium", "high"]).nullish(),
      summary: z.enum(["auto", "concise", "detailed"]).nullish(),
      generate_summary: z.enum(["auto", "concise", "detailed"]).nullish(),
    })
    .nullish(),
  metadata: metadata.nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_obfuscation: z.boolean().optional() }).nullish(),
  store: z.boolean().nullish(),
  background: z.boolean().nullish(),
  previous_response_id: z.string().min(1).nullish(),
  include: z.array(z.string()).nullish(),
  user: z.string().nullish(),
  safety_identifier: z.string().nullish(),
  prompt_cache_key: z.string().nullish(),
  prompt_cache_retention: z.string().nullish(),
  service_tier: z.string().nullish(),
  max_tool_calls: z.number().int().positive().nullish(),
  truncation: z.literal("disabled", "only 'disabled' is supported: the conversation is never truncated to fit").nullish(),
  top_logprobs: z.literal(0, "log probabilities are not supported").nullish(),
  conversation: notSupported("the Conversations API is not supported: continue a conversation with previous_response_id"),
  prompt: notSupported("stored prompt templates are not supported"),
});

export type ResponsesRequest = z.infer<typeof ResponsesRequestSchema>;
/** An input item, as validated. Output items of a response (messages, function calls, reasoning) are valid input items too. */
export type ResponsesInputItem = z.infer<typeof inputItem>;
type Part = z.infer<typeof contentPart>;

/** A missing field says so, instead of "expected string, received undefined". */
const errorMap: core.$ZodErrorMap = (issue) =>
  (issue.code === "invalid_type" || issue.code === "invalid_union") && issue.input === undefined ? "required" : undefined;

/**
 * Validates a request body; throws RUNNEL_ERR_INVALID_REQUEST (400, OpenAI's
 * error shape at the edge) whose `param` names the field at fault, as OpenAI
 * names it (`input[0].content[1].type`), and whose message starts with it.
 */
export function parseResponsesRequest(body: unknown): ResponsesRequest {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", "the request body must be a JSON object");
  }
  const result = ResponsesRequestSchema.safeParse(body, { error: errorMap });
  if (result.success) return result.data;
  throw invalid(result.error.issues);
}

/** Validates stored items (a conversation kept for `previous_response_id`); the same rules as `input`. */
export function parseInputItems(items: unknown): ResponsesInputItem[] {
  const result = z.array(inputItem).safeParse(items, { error: errorMap });
  if (result.success) return result.data;
  throw invalid(result.error.issues);
}

function invalid(issues: ReadonlyArray<core.$ZodIssue>): RunnelError {
  const issue = mostSpecific(issues);
  if (!issue) return new RunnelError("RUNNEL_ERR_INVALID_REQUEST", "invalid request");
  const param = formatParam(issue.path);
  return new RunnelError("RUNNEL_ERR_INVALID_REQUEST", param ? `${param}: ${issue.message}` : issue.message, param ? { param } : {});
}

interface FlatIssue {
  readonly path: ReadonlyArray<PropertyKey>;
  readonly message: string;
}

/**
 * The first issue, with a union's failure replaced by the failure of the
 * branch that got furthest: `input` given as items should be reported at
 * the item that is wrong, not as "not a string".
 */
function mostSpecific(issues: ReadonlyArray<core.$ZodIssue>, base: ReadonlyArray<PropertyKey> = []): FlatIssue | undefined {
  const issue = issues[0];
  if (!issue) return undefined;
  const path = [...base, ...issue.path];
  if (issue.code !== "invalid_union" || issue.errors.length === 0) return { path, message: issue.message };
  let best: FlatIssue | undefined;
  for (const branch of issue.errors) {
    const candidate = mostSpecific(branch, path);
    if (candidate && (!best || candidate.path.length > best.path.length)) best = candidate;
  }
  // No branch got past the value itself: the union's own message says what was expected.
  return best && best.path.length > path.length ? best : { path, message: issue.message };
}

function formatParam(path: ReadonlyArray<PropertyKey>): string {
  return path.map((part, index) => (typeof part === "number" ? `[${part}]` : index === 0 ? String(part) : `.${String(part)}`)).join("");
}

/** The request's `input` as items: a string is one user message. */
export function inputItems(request: Pick<ResponsesRequest, "input">): ResponsesInputItem[] {
  if (typeof request.input === "string") return [{ type: "message", role: "user", content: request.input }];
  return request.input;
}

/**
 * The items a model sees for a request that continues `previous_response_id`:
 * that response's conversation (its own earlier turns, its input and its
 * output, as stored), then this request's input. The previous response's
 * `instructions` are not carried over, as OpenAI documents: each request's
 * own `instructions` apply.
 */
export function withPreviousTurns(previous: readonly ResponsesInputItem[], request: Pick<ResponsesRequest, "input">): ResponsesInputItem[] {
  return [...previous, ...inputItems(request)];
}

/**
 * What to store for a response so the next request can continue it with
 * `previous_response_id`: every item the model saw (earlier turns and this
 * input) followed by the response's output items. Output items of a
 * response are input items in the same shapes, and are validated as such.
 */
export function conversationAfter(seen: readonly ResponsesInputItem[], output: readonly unknown[]): ResponsesInputItem[] {
  return [...seen, ...parseInputItems(output)];
}

const text = (value: string): ContentPart => ({ part: { $case: "text", value } });

function parts(content: string | readonly Part[]): ContentPart[] {
  if (typeof content === "string") return [text(content)];
  const out: ContentPart[] = [];
  for (const part of content) {
    switch (part.type) {
      case "input_text":
      case "output_text":
        out.push(text(part.text));
        break;
      case "refusal":
        out.push(text(part.refusal));
        break;
      case "input_image":
        // The schema refused an image without a URL.
        if (part.image_url) out.push({ part: { $case: "imageUrl", value: { url: part.image_url, detail: part.detail ?? "" } } });
        break;
      default:
        // input_file: the schema refused it.
        break;
    }
  }
  return out;
}

function chatMessage(role: string, content: ContentPart[], extra: Partial<ChatMessage> = {}): ChatMessage {
  return { role, content, name: "", toolCallId: "", toolCalls: [], ...extra };
}

/**
 * The conversation as chat messages: `instructions` first as a system
 * message; each message item as a message of its role; each `function_call`
 * as a tool call of the assistant message it follows (a new one when the
 * previous message is not the assistant's); each `function_call_output` as
 * a `tool` message answering its call, which must be one of the calls before
 * it (OpenAI's rule: a 400 otherwise, naming the item).
 */
function chatMessages(instructions: string | null | undefined, items: readonly ResponsesInputItem[], inputOffset: number): ChatMessage[] {
  const messages: ChatMessage[] = [];
  if (instructions) messages.push(chatMessage("system", [text(instructions)]));
  const calls = new Set<string>();
  for (const [index, item] of items.entries()) {
    switch (item.type) {
      case "message":
        messages.push(chatMessage(item.role, parts(item.content)));
        break;
      case "function_call": {
        const call: ToolCall = { id: item.call_id, name: item.name, arguments: item.arguments };
        calls.add(item.call_id);
        const last = messages.at(-1);
        if (last?.role === "assistant") last.toolCalls.push(call);
        else messages.push(chatMessage("assistant", [], { toolCalls: [call] }));
        break;
      }
      case "function_call_output": {
        if (!calls.has(item.call_id)) {
          // An index inside the stored conversation is not the client's to fix: name the request's own input only.
          const param = index >= inputOffset ? `input[${index - inputOffset}].call_id` : "previous_response_id";
          throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", `${param}: no function_call with call_id '${item.call_id}' comes before this output`, { param });
        }
        messages.push(chatMessage("tool", parts(item.output), { toolCallId: item.call_id }));
        break;
      }
      default:
        // reasoning: replayed history the ChatRequest has no place for.
        break;
    }
  }
  return messages;
}

/** The chat completions `tool_choice` the ChatRequest carries. */
function toolChoiceJson(choice: ResponsesRequest["tool_choice"]): string {
  if (choice == null) return "";
  if (typeof choice === "string") return JSON.stringify(choice);
  return JSON.stringify({ type: "function", function: { name: choice.name } });
}

/** The chat completions `response_format` the ChatRequest carries; undefined for plain text. */
function responseFormatJson(format: NonNullable<ResponsesRequest["text"]>["format"]): string | undefined {
  switch (format?.type) {
    case "json_schema":
      return JSON.stringify({
        type: "json_schema",
        json_schema: {
          name: format.name,
          schema: format.schema,
          ...(format.description != null ? { description: format.description } : {}),
          ...(format.strict != null ? { strict: format.strict } : {}),
        },
      });
    case "json_object":
      return JSON.stringify({ type: "json_object" });
    default:
      return undefined;
  }
}

/**
 * Maps a validated Responses request onto the normalised request that
 * travels in the job. `previous`: the stored conversation of
 * `previous_response_id` (empty for a first turn). Usage is always asked
 * for: every Responses ending carries it.
 */
export function toChatRequestFromResponses(request: ResponsesRequest, previous: readonly ResponsesInputItem[] = []): ChatRequest {
  const items = withPreviousTurns(previous, request);
  const format = responseFormatJson(request.text?.format);
  const effort = request.reasoning?.effort;
  const summary = request.reasoning?.summary ?? request.reasoning?.generate_summary;
  return {
    messages: chatMessages(request.instructions, items, previous.length),
    ...(request.temperature != null ? { temperature: request.temperature } : {}),
    ...(request.top_p != null ? { topP: request.top_p } : {}),
    ...(request.max_output_tokens != null ? { maxTokens: request.max_output_tokens } : {}),
    stop: [],
    tools: (request.tools ?? []).map((tool) => ({
      name: tool.name,
      description: tool.description ?? "",
      parametersJson: tool.parameters ? JSON.stringify(tool.parameters) : "",
      ...(tool.strict != null ? { strict: tool.strict } : {}),
    })),
    toolChoiceJson: toolChoiceJson(request.tool_choice),
    includeUsage: true,
    user: request.user ?? request.safety_identifier ?? "",
    ...(format !== undefined ? { responseFormatJson: format } : {}),
    ...(effort != null ? { reasoningEffort: effort } : {}),
    ...(summary != null ? { reasoningSummary: summary } : {}),
  };
}

/**
 * The request's settings as the Response object repeats them (OpenAI echoes
 * them in every `response.*` event and in GET /v1/responses/{id}), with
 * OpenAI's defaults for what the client left out. Plain JSON: the wiring
 * step stores it with the response so any replica can rebuild the object.
 */
export function responseEcho(request: ResponsesRequest): ResponseEcho {
  return {
    background: request.background ?? false,
    instructions: request.instructions ?? null,
    max_output_tokens: request.max_output_tokens ?? null,
    max_tool_calls: request.max_tool_calls ?? null,
    metadata: request.metadata ?? {},
    parallel_tool_calls: request.parallel_tool_calls ?? true,
    previous_response_id: request.previous_response_id ?? null,
    reasoning: { effort: request.reasoning?.effort ?? null, summary: request.reasoning?.summary ?? request.reasoning?.generate_summary ?? null },
    store: request.store ?? true,
    temperature: request.temperature ?? null,
    text: { format: request.text?.format ?? { type: "text" }, ...(request.text?.verbosity != null ? { verbosity: request.text.verbosity } : {}) },
    tool_choice: request.tool_choice ?? "auto",
    tools: (request.tools ?? []).map((tool) => ({
      type: "function",
      name: tool.name,
      description: tool.description ?? null,
      parameters: tool.parameters ?? null,
      strict: tool.strict ?? null,
    })),
    top_p: request.top_p ?? null,
    truncation: "disabled",
    user: request.user ?? null,
  };
}
