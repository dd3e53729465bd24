/**
 * The OpenAI-compatible adapter: the OpenAI API and any server that speaks
 * its chat completions stream (vLLM, Ollama, llama-server, LM Studio, the
 * mock provider). Upstream SSE is read with eventsource-parser and every
 * chunk is validated with a schema before it is mapped.
 */
import { type ChatRequest, FinishReason, finishReasonFromOpenAI } from "@runnel/shared/contracts";
import type { EventSourceMessage } from "eventsource-parser";
import { z } from "zod";
import { ProviderError, safeJson } from "./http.js";
import { type DecoderSink, joinUrl, parseJson, runSseStream, type SseStreamOptions, type StreamDecoder, validChunk } from "./sse-stream.js";
import type { EventBatch, ProviderAdapter, StreamCall } from "./types.js";

const toolCallDelta = z.object({
  index: z.number().int().nonnegative().default(0),
  id: z.string().nullish(),
  type: z.string().nullish(),
  function: z.object({ name: z.string().nullish(), arguments: z.string().nullish() }).nullish(),
});

const usage = z.object({
  prompt_tokens: z.number().int().nonnegative().default(0),
  completion_tokens: z.number().int().nonnegative().default(0),
  prompt_tokens_details: z.object({ cached_tokens: z.number().int().nonnegative().nullish() }).nullish(),
  completion_tokens_details: z.object({ reasoning_tokens: z.number().int().nonnegative().nullish() }).nullish(),
});

/** One `chat.completion.chunk`, as loosely as the compatible servers need and as strictly as mapping needs. */
export const ChunkSchema = z.object({
  model: z.string().nullish(),
  choices: z
    .array(
      z.object({
        index: z.number().int().nonnegative().default(0),
        delta: z
          .object({
            role: z.string().nullish(),
            content: z.string().nullish(),
            // DeepSeek, vLLM and llama-server name the reasoning stream differently.
            reasoning_content: z.string().nullish(),
            reasoning: z.string().nullish(),
            tool_calls: z.array(toolCallDelta).nullish(),
          })
          .nullish(),
        finish_reason: z.string().nullish(),
      }),
    )
    .default([]),
  usage: usage.nullish(),
  error: z.object({ message: z.string().default("provider error"), code: z.unknown().optional() }).nullish(),
});

/** The OpenAI error answer: `{ "error": { "message": ... } }`. */
const ErrorBodySchema = z.object({ error: z.object({ message: z.string() }) });

/**
 * The OpenAI chat completions body. `continueFinalMessage`: a conversation
 * ending with an assistant message is a prefill to continue, which vLLM-style
 * servers do only when told (and without a new generation prompt).
 */
export function openAIRequestBody(request: ChatRequest, model: string, continueFinalMessage = false): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model,
    stream: true,
    stream_options: { include_usage: true },
    messages: request.messages.map((message) => {
      const out: Record<string, unknown> = { role: message.role };
      const parts = message.content;
      if (parts.length === 1 && parts[0]?.part?.$case === "text") out.content = parts[0].part.value;
      else if (parts.length === 0) out.content = message.role === "assistant" ? null : "";
      else
        out.content = parts.map((part) =>
          part.part?.$case === "imageUrl"
            ? { type: "image_url", image_url: { url: part.part.value.url, ...(part.part.value.detail ? { detail: part.part.value.detail } : {}) } }
            : { type: "text", text: part.part?.$case === "text" ? part.part.value : "" },
        );
      if (message.name) out.name = message.name;
      if (message.toolCallId) out.tool_call_id = message.toolCallId;
      if (message.toolCalls.length > 0) {
        out.tool_calls = message.toolCalls.map((call) => ({ id: call.id, type: "function", function: { name: call.name, arguments: call.arguments } }));
      }
      return out;
    }),
  };
  if (request.temperature !== undefined) body.temperature = request.temperature;
  if (request.topP !== undefined) body.top_p = request.topP;
  if (request.maxTokens !== undefined) body.max_tokens = request.maxTokens;
  if (request.stop.length > 0) body.stop = request.stop;
  if (request.seed !== undefined) body.seed = request.seed;
  if (request.user) body.user = request.user;
  if (request.tools.length > 0) {
    body.tools = request.tools.map((tool) => ({
      type: "function",
      function: {
        name: tool.name,
        description: tool.description || undefined,
        parameters: tool.parametersJson ? JSON.parse(tool.parametersJson) : undefined,
        strict: tool.strict,
      },
    }));
  }
  if (request.toolChoiceJson) body.tool_choice = JSON.parse(request.toolChoiceJson);
  if (request.responseFormatJson) body.response_format = JSON.parse(request.responseFormatJson);
  if (request.reasoningEffort) body.reasoning_effort = request.reasoningEffort;
  if (continueFinalMessage && request.messages.at(-1)?.role === "assistant") {
    body.continue_final_message = true;
    body.add_generation_prompt = false;
  }
  return body;
}

export function createOpenAIAdapter(options: SseStreamOptions): ProviderAdapter {
  return {
    stream(call: StreamCall): AsyncIterable<EventBatch> {
      const { provider } = call;
      const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream", ...provider.headers };
      if (provider.apiKey) headers.authorization = `Bearer ${provider.apiKey}`;
      return runSseStream(call, options, {
        url: joinUrl(provider.baseUrl, "chat/completions"),
        headers,
        body: JSON.stringify(openAIRequestBody(call.request, call.model, provider.continueFinalMessage)),
        readError: (_status, text) => {
          const parsed = ErrorBodySchema.safeParse(safeJson(text));
          return { message: parsed.success ? parsed.data.error.message : text.slice(0, 500) || "no body" };
        },
        decoder: new OpenAIDecoder(),
      });
    },
  };
}

/** Maps `chat.completion.chunk` events. `[DONE]` is the end marker; a finish reason without it is an honest end too. */
export class OpenAIDecoder implements StreamDecoder {
  decode(event: EventSourceMessage, sink: DecoderSink): void {
    if (event.data === "[DONE]") {
      sink.end();
      return;
    }
    const json = parseJson(event.data, sink);
    if (json === undefined) return;
    const chunk = validChunk(ChunkSchema, json, sink);
    if (!chunk) return;
    if (chunk.error) {
      sink.fail(new ProviderError("RUNNEL_ERR_PROVIDER_UNAVAILABLE", `provider reported an error mid-stream: ${chunk.error.message}`, { retry: true }));
      return;
    }
    for (const choice of chunk.choices) {
      if (choice.index !== 0) continue;
      const delta = choice.delta;
      if (delta) {
        const reasoning = delta.reasoning_content ?? delta.reasoning;
        if (reasoning) sink.token({ $case: "reasoningDelta", value: { text: reasoning } });
        if (delta.content) sink.token({ $case: "textDelta", value: { text: delta.content } });
        if (delta.tool_calls) {
          for (const tool of delta.tool_calls) {
            sink.token({
              $case: "toolCallDelta",
              value: { index: tool.index, id: tool.id ?? "", name: tool.function?.name ?? "", arguments: tool.function?.arguments ?? "" },
            });
          }
        }
      }
      if (choice.finish_reason) sink.finish(finishReasonFromOpenAI(choice.finish_reason) ?? FinishReason.FINISH_REASON_STOP);
    }
    if (chunk.usage) {
      sink.usage({
        inputTokens: chunk.usage.prompt_tokens,
        outputTokens: chunk.usage.completion_tokens,
        cachedInputTokens: chunk.usage.prompt_tokens_details?.cached_tokens ?? 0,
        reasoningTokens: chunk.usage.completion_tokens_details?.reasoning_tokens ?? 0,
      });
    }
  }
}
