/**
 * The Anthropic Messages API request (`POST /v1/messages`): validated with a
 * schema and mapped onto the normalised ChatRequest, so any provider can
 * serve it. Pure.
 *
 * What the ChatRequest cannot carry is accepted and dropped: `thinking` and
 * `redacted_thinking` blocks replayed in an assistant turn, `top_k`, the
 * `thinking` parameter, `tool_choice.disable_parallel_tool_use`,
 * `cache_control` and `tool_result.is_error`. Unknown fields are ignored, as
 * on the OpenAI route. What no provider could be given is refused with the
 * field named: server tools, `document` blocks, a block in the wrong turn.
 */
import { type ChatMessage, type ChatRequest, type ContentPart, RunnelError } from "@runnel/shared/contracts";
import { type core, z } from "zod";
import type { RequestApi } from "./api.js";

const REQUIRED = "Field required";

const textBlock = z.object({ type: z.literal("text"), text: z.string() });

const imageSource = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("base64"),
    media_type: z.enum(["image/jpeg", "image/png", "image/gif", "image/webp"], "expected 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"),
    data: z.string().min(1),
  }),
  z.object({ type: z.literal("url"), url: z.string().min(1) }),
]);

const imageBlock = z.object({ type: z.literal("image"), source: imageSource });

const toolUseBlock = z.object({
  type: z.literal("tool_use"),
  id: z.string().min(1),
  name: z.string().min(1),
  input: z.record(z.string(), z.unknown()),
});

const toolResultBlock = z.object({
  type: z.literal("tool_result"),
  tool_use_id: z.string().min(1),
  content: z.union([z.string(), z.array(z.discriminatedUnion("type", [textBlock, imageBlock]))]).optional(),
  is_error: z.boolean().optional(),
});

/** Extended-thinking blocks a client sends back in an assistant turn; the ChatRequest has no place for them. */
const thinkingBlock = z.object({ type: z.literal("thinking"), thinking: z.string(), signature: z.string().optional() });
const redactedThinkingBlock = z.object({ type: z.literal("redacted_thinking"), data: z.string() });

const contentBlock = z.discriminatedUnion("type", [textBlock, imageBlock, toolUseBlock, toolResultBlock, thinkingBlock, redactedThinkingBlock]);

const ASSISTANT_ONLY = new Set(["tool_use", "thinking", "redacted_thinking"]);

const message = z
  .object({
    role: z.enum(["user", "assistant"], "expected 'user' or 'assistant'"),
    content: z.union([z.string(), z.array(contentBlock)]),
  })
  .superRefine((turn, context) => {
    if (typeof turn.content === "string") return;
    // An empty assistant turn is a prefill of nothing, which Anthropic allows last; an empty user turn would vanish in the mapping.
    if (turn.role === "user" && turn.content.length === 0) {
      context.addIssue({ code: "custom", path: ["content"], message: "a user message needs at least one content block" });
    }
    for (const [index, block] of turn.content.entries()) {
      const misplaced = turn.role === "user" ? ASSISTANT_ONLY.has(block.type) : block.type === "tool_result";
      if (misplaced) {
        context.addIssue({
          code: "custom",
          path: ["content", index, "type"],
          message: `${block.type} blocks are only valid in ${turn.role === "user" ? "assistant" : "user"} messages`,
        });
      }
    }
  });

const tool = z.object({
  type: z.literal("custom").optional(),
  name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "letters, digits, _ and -, at most 64"),
  description: z.string().optional(),
  input_schema: z.record(z.string(), z.unknown()),
});

const toolChoice = z.discriminatedUnion("type", [
  z.object({ type: z.literal("auto"), disable_parallel_tool_use: z.boolean().optional() }),
  z.object({ type: z.literal("any"), disable_parallel_tool_use: z.boolean().optional() }),
  z.object({ type: z.literal("tool"), name: z.string().min(1), disable_parallel_tool_use: z.boolean().optional() }),
  z.object({ type: z.literal("none") }),
]);

export const MessagesRequestSchema = z.object({
  model: z.string().min(1),
  max_tokens: z.number().int().min(1, "must be at least 1"),
  messages: z.array(message).min(1, "at least one message is required"),
  system: z.union([z.string(), z.array(textBlock)]).optional(),
  stop_sequences: z.array(z.string()).optional(),
  temperature: z.number().min(0).max(1).optional(),
  top_p: z.number().min(0).max(1).optional(),
  tools: z.array(tool).optional(),
  tool_choice: toolChoice.optional(),
  stream: z.boolean().optional(),
  metadata: z.object({ user_id: z.string().nullish() }).optional(),
});

export type MessagesRequest = z.infer<typeof MessagesRequestSchema>;
type ContentBlock = z.infer<typeof contentBlock>;

/** A missing field says so, in Anthropic's words, instead of "expected number, received undefined". */
const errorMap: core.$ZodErrorMap = (issue) => (issue.code === "invalid_type" && issue.input === undefined ? REQUIRED : undefined);

/**
 * Validates a request body; throws RUNNEL_ERR_INVALID_REQUEST whose message
 * starts with the field at fault in Anthropic's dotted form
 * (`messages.0.content.1.source.media_type: ...`), which is also its `param`.
 */
export function parseMessagesRequest(body: unknown): MessagesRequest {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", "the request body must be a JSON object");
  }
  const result = MessagesRequestSchema.safeParse(body, { error: errorMap });
  if (result.success) return result.data;
  const issue = mostSpecific(result.error.issues);
  if (!issue) throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", "invalid request");
  const param = issue.path.map(String).join(".");
  return invalid(param, issue.message);
}

function invalid(param: string, message: string): never {
  throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", param ? `${param}: ${message}` : message, param ? { param } : {});
}

interface FlatIssue {
  readonly path: ReadonlyArray<PropertyKey>;
  readonly message: string;
}

/**
 * The first issue, with a union's failure replaced by the failure of the
 * branch that got furthest: `content` given as blocks should be reported at
 * the block that is wrong, not as "not a string".
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
  return best ?? { path, message: issue.message };
}

const text = (value: string): ContentPart => ({ part: { $case: "text", value } });

function imagePart(source: z.infer<typeof imageSource>): ContentPart {
  const url = source.type === "base64" ? `data:${source.media_type};base64,${source.data}` : source.url;
  return { part: { $case: "imageUrl", value: { url, detail: "" } } };
}

function chatMessage(role: string, content: ContentPart[], extra: Partial<ChatMessage> = {}): ChatMessage {
  return { role, content, name: "", toolCallId: "", toolCalls: [], ...extra };
}

/**
 * A user turn's blocks, in order: each `tool_result` becomes a "tool"
 * message answering its call; the text and images between them become user
 * messages.
 */
function userMessages(blocks: ReadonlyArray<ContentBlock>, out: ChatMessage[]): void {
  let pending: ContentPart[] = [];
  const flush = () => {
    if (pending.length > 0) out.push(chatMessage("user", pending));
    pending = [];
  };
  for (const block of blocks) {
    switch (block.type) {
      case "text":
        pending.push(text(block.text));
        break;
      case "image":
        pending.push(imagePart(block.source));
        break;
      case "tool_result": {
        flush();
        const content =
          block.content === undefined
            ? [text("")]
            : typeof block.content === "string"
              ? [text(block.content)]
              : block.content.map((part) => (part.type === "text" ? text(part.text) : imagePart(part.source)));
        out.push(chatMessage("tool", content, { toolCallId: block.tool_use_id }));
        break;
      }
      default:
        // Assistant-only blocks; the schema refused them in a user turn.
        break;
    }
  }
  flush();
}

/** An assistant turn: its text as content, its tool_use blocks as tool calls. */
function assistantMessage(blocks: ReadonlyArray<ContentBlock>): ChatMessage {
  const content: ContentPart[] = [];
  const toolCalls: ChatMessage["toolCalls"] = [];
  for (const block of blocks) {
    if (block.type === "text") content.push(text(block.text));
    else if (block.type === "image") content.push(imagePart(block.source));
    else if (block.type === "tool_use") toolCalls.push({ id: block.id, name: block.name, arguments: JSON.stringify(block.input) });
    // thinking and redacted_thinking: replayed history the ChatRequest has no place for.
  }
  return chatMessage("assistant", content, { toolCalls });
}

/** The OpenAI-style `tool_choice` the ChatRequest carries. */
function toolChoiceJson(choice: MessagesRequest["tool_choice"]): string {
  switch (choice?.type) {
    case undefined:
      return "";
    case "auto":
      return '"auto"';
    case "any":
      return '"required"';
    case "none":
      return '"none"';
    case "tool":
      return JSON.stringify({ type: "function", function: { name: choice.name } });
  }
}

/**
 * Maps a validated Messages request onto the normalised request that travels
 * in the job. Usage is always asked for: Anthropic's `message_delta` and
 * `message` always report it.
 */
export function toChatRequestFromMessages(request: MessagesRequest): ChatRequest {
  const messages: ChatMessage[] = [];
  if (request.system !== undefined) {
    const parts = typeof request.system === "string" ? [text(request.system)] : request.system.map((block) => text(block.text));
    if (parts.length > 0) messages.push(chatMessage("system", parts));
  }
  for (const turn of request.messages) {
    if (typeof turn.content === "string") messages.push(chatMessage(turn.role, [text(turn.content)]));
    else if (turn.role === "assistant") messages.push(assistantMessage(turn.content));
    else userMessages(turn.content, messages);
  }
  return {
    messages,
    ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
    ...(request.top_p !== undefined ? { topP: request.top_p } : {}),
    maxTokens: request.max_tokens,
    stop: request.stop_sequences ?? [],
    tools: (request.tools ?? []).map((t) => ({ name: t.name, description: t.description ?? "", parametersJson: JSON.stringify(t.input_schema) })),
    toolChoiceJson: toolChoiceJson(request.tool_choice),
    includeUsage: true,
    user: request.metadata?.user_id ?? "",
  };
}

/** `POST /v1/messages`. */
export const messagesApi: RequestApi = {
  name: "anthropic",
  parse(body) {
    const request = parseMessagesRequest(body);
    return { model: request.model, streaming: request.stream === true, chat: toChatRequestFromMessages(request) };
  },
};
