/**
 * The OpenAI chat completions request: validated with a schema and mapped
 * onto the normalised ChatRequest. Pure.
 */
import { type ChatMessage, type ChatRequest, RunnelError } from "@runnel/shared/contracts";
import { z } from "zod";
import type { RequestApi } from "./api.js";

const contentPart = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text"), text: z.string() }),
  z.object({ type: z.literal("image_url"), image_url: z.object({ url: z.string().min(1), detail: z.enum(["auto", "low", "high"]).optional() }) }),
]);

const toolCall = z.object({
  id: z.string(),
  type: z.literal("function"),
  function: z.object({ name: z.string(), arguments: z.string() }),
});

const message = z.object({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: z.union([z.string(), z.array(contentPart), z.null()]).optional(),
  name: z.string().optional(),
  tool_call_id: z.string().optional(),
  tool_calls: z.array(toolCall).optional(),
});

const tool = z.object({
  type: z.literal("function"),
  function: z.object({
    name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "letters, digits, _ and -, at most 64"),
    description: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
  }),
});

export const ChatCompletionRequestSchema = z.object({
  model: z.string().min(1),
  messages: z.array(message).min(1, "at least one message is required"),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  max_tokens: z.number().int().positive().nullish(),
  max_completion_tokens: z.number().int().positive().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(4)], { error: "expected a string or an array of at most 4 strings" }).nullish(),
  n: z.literal(1, "only n=1 is supported").nullish(),
  seed: z.number().int().nullish(),
  user: z.string().nullish(),
  tools: z.array(tool).nullish(),
  tool_choice: z.union([z.enum(["none", "auto", "required"]), z.object({ type: z.literal("function"), function: z.object({ name: z.string() }) })]).nullish(),
});

export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

/** Validates a request body; throws RUNNEL_ERR_INVALID_REQUEST naming the field at fault. */
export function parseChatCompletionRequest(body: unknown): ChatCompletionRequest {
  const result = ChatCompletionRequestSchema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const param = issue ? formatParam(issue.path) : undefined;
  const message = issue ? `${param ? `${param}: ` : ""}${issue.message}` : "invalid request";
  throw new RunnelError("RUNNEL_ERR_INVALID_REQUEST", message, param ? { param } : {});
}

function formatParam(path: ReadonlyArray<PropertyKey>): string {
  return path.map((part, index) => (typeof part === "number" ? `[${part}]` : index === 0 ? String(part) : `.${String(part)}`)).join("");
}

/** Maps a validated OpenAI request onto the normalised request that travels in the job. */
export function toChatRequest(request: ChatCompletionRequest, includeUsage: boolean): ChatRequest {
  const messages: ChatMessage[] = request.messages.map((m) => ({
    role: m.role,
    content:
      typeof m.content === "string"
        ? [{ part: { $case: "text", value: m.content } }]
        : (m.content ?? []).map((part) =>
            part.type === "text"
              ? { part: { $case: "text" as const, value: part.text } }
              : { part: { $case: "imageUrl" as const, value: { url: part.image_url.url, detail: part.image_url.detail ?? "" } } },
          ),
    name: m.name ?? "",
    toolCallId: m.tool_call_id ?? "",
    toolCalls: (m.tool_calls ?? []).map((call) => ({ id: call.id, name: call.function.name, arguments: call.function.arguments })),
  }));
  const maxTokens = request.max_completion_tokens ?? request.max_tokens;
  return {
    messages,
    ...(request.temperature != null ? { temperature: request.temperature } : {}),
    ...(request.top_p != null ? { topP: request.top_p } : {}),
    ...(maxTokens != null ? { maxTokens } : {}),
    ...(request.seed != null ? { seed: request.seed } : {}),
    stop: request.stop == null ? [] : typeof request.stop === "string" ? [request.stop] : request.stop,
    tools: (request.tools ?? []).map((t) => ({
      name: t.function.name,
      description: t.function.description ?? "",
      parametersJson: t.function.parameters ? JSON.stringify(t.function.parameters) : "",
    })),
    toolChoiceJson: request.tool_choice == null ? "" : JSON.stringify(request.tool_choice),
    includeUsage,
    user: request.user ?? "",
  };
}

/**
 * `POST /v1/chat/completions` (and a WebSocket request frame). Usage is asked
 * for a non-streaming answer always (its `usage` field), for a stream when
 * the client asks (`stream_options.include_usage`).
 */
export const chatCompletionsApi: RequestApi = {
  name: "openai",
  parse(body) {
    const request = parseChatCompletionRequest(body);
    const streaming = request.stream === true;
    return { model: request.model, streaming, chat: toChatRequest(request, streaming ? request.stream_options?.include_usage === true : true) };
  },
};
