/**
 * The OpenAI-compatible adapter: the OpenAI API and any server that speaks
 * its chat completions stream (vLLM, Ollama, llama-server, LM Studio, the
 * mock provider). Upstream SSE is read with eventsource-parser and every
 * chunk is validated with a schema before it is mapped.
 */
import { type ChatRequest, type EventBody, FinishReason, finishReasonFromOpenAI, RunnelError } from "@runnel/shared";
import { createParser } from "eventsource-parser";
import { request as httpRequest } from "undici";
import { z } from "zod";
import { type AgentPool, errorFromStatus, errorFromTransport, readBounded, Watchdog } from "./http.js";
import type { ProviderAdapter, StreamCall } from "./types.js";

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

export interface OpenAIAdapterOptions {
  readonly agents: AgentPool;
  /** Called for each chunk that failed validation and was skipped. */
  readonly onMalformedChunk?: (reason: string) => void;
}

export function openAIRequestBody(request: ChatRequest, model: string): Record<string, unknown> {
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
      function: { name: tool.name, description: tool.description || undefined, parameters: tool.parametersJson ? JSON.parse(tool.parametersJson) : undefined },
    }));
  }
  if (request.toolChoiceJson) body.tool_choice = JSON.parse(request.toolChoiceJson);
  return body;
}

export function createOpenAIAdapter(options: OpenAIAdapterOptions): ProviderAdapter {
  return {
    async stream(call: StreamCall): Promise<void> {
      const { provider } = call;
      const controller = new AbortController();
      const abort = () => controller.abort(call.signal.reason);
      if (call.signal.aborted) abort();
      else call.signal.addEventListener("abort", abort, { once: true });
      const timeouts = provider.timeouts;
      const watchdog = new Watchdog(controller, timeouts?.firstTokenMs ?? 0, timeouts?.idleMs ?? 0);
      const total = timeouts?.totalMs
        ? setTimeout(() => controller.abort(new RunnelError("RUNNEL_ERR_PROVIDER_TIMEOUT", `stream exceeded ${timeouts.totalMs} ms`)), timeouts.totalMs)
        : undefined;
      const failure = () => (controller.signal.reason instanceof RunnelError ? controller.signal.reason : undefined);
      try {
        const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream", ...provider.headers };
        if (provider.apiKey) headers.authorization = `Bearer ${provider.apiKey}`;
        let response: Awaited<ReturnType<typeof httpRequest>>;
        try {
          response = await httpRequest(`${provider.baseUrl.replace(/\/$/, "")}/chat/completions`, {
            method: "POST",
            headers,
            body: JSON.stringify(openAIRequestBody(call.request, call.model)),
            dispatcher: options.agents.get(provider),
            signal: controller.signal,
          });
        } catch (error) {
          throw failure() ?? errorFromTransport(error, "connect");
        }
        if (response.statusCode < 200 || response.statusCode > 299) {
          const text = await readBounded(response.body).catch(() => "");
          const parsed = ErrorBodySchema.safeParse(safeJson(text));
          const retryAfter = response.headers["retry-after"];
          throw errorFromStatus(
            response.statusCode,
            parsed.success ? parsed.data.error.message : text.slice(0, 500) || "no body",
            typeof retryAfter === "string" ? retryAfter : undefined,
          );
        }
        call.emit({ $case: "started", value: { provider: provider.name, model: call.model, attempt: 1 } });
        await readStream(response.body, call, watchdog, options.onMalformedChunk).catch((error: unknown) => {
          throw failure() ?? errorFromTransport(error, "stream");
        });
      } finally {
        watchdog.stop();
        if (total) clearTimeout(total);
        call.signal.removeEventListener("abort", abort);
        if (!controller.signal.aborted) controller.abort();
      }
    },
  };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** After [DONE], how long the rest of the body may take to arrive, so the connection can go back to the pool. */
const DRAIN_AFTER_DONE_MS = 1_000;
const STREAM_DECODE = { stream: true } as const;

/** Reads the SSE body to its end and maps each chunk. Resolves only on an honest end. */
async function readStream(
  body: AsyncIterable<Uint8Array>,
  call: StreamCall,
  watchdog: Watchdog,
  onMalformed: ((reason: string) => void) | undefined,
): Promise<void> {
  let finish: FinishReason | undefined;
  let sawDone = false;
  let sawToken = false;
  let validChunks = 0;
  let malformedChunks = 0;
  let pendingUsage: EventBody | undefined;
  let streamError: RunnelError | undefined;
  const token = (event: EventBody) => {
    if (!sawToken) {
      sawToken = true;
      watchdog.touch();
    }
    call.emit(event);
  };
  const malformed = (reason: string) => {
    malformedChunks += 1;
    onMalformed?.(reason);
  };
  const parser = createParser({
    onEvent(event) {
      if (sawDone || streamError) return;
      if (sawToken) watchdog.touch();
      if (event.data === "[DONE]") {
        sawDone = true;
        return;
      }
      let json: unknown;
      try {
        json = JSON.parse(event.data);
      } catch {
        malformed("not JSON");
        return;
      }
      const parsed = ChunkSchema.safeParse(json);
      if (!parsed.success) {
        malformed(parsed.error.issues[0]?.message ?? "schema");
        return;
      }
      validChunks += 1;
      const chunk = parsed.data;
      if (chunk.error) {
        streamError = new RunnelError("RUNNEL_ERR_PROVIDER_UNAVAILABLE", `provider reported an error mid-stream: ${chunk.error.message}`);
        return;
      }
      for (const choice of chunk.choices) {
        if (choice.index !== 0) continue;
        const delta = choice.delta;
        if (delta) {
          const reasoning = delta.reasoning_content ?? delta.reasoning;
          if (reasoning) token({ $case: "reasoningDelta", value: { text: reasoning } });
          if (delta.content) token({ $case: "textDelta", value: { text: delta.content } });
          if (delta.tool_calls) {
            for (const tool of delta.tool_calls) {
              token({
                $case: "toolCallDelta",
                value: { index: tool.index, id: tool.id ?? "", name: tool.function?.name ?? "", arguments: tool.function?.arguments ?? "" },
              });
            }
          }
        }
        if (choice.finish_reason) finish = finishReasonFromOpenAI(choice.finish_reason) ?? FinishReason.FINISH_REASON_STOP;
      }
      if (chunk.usage) {
        pendingUsage = {
          $case: "usage",
          value: {
            inputTokens: chunk.usage.prompt_tokens,
            outputTokens: chunk.usage.completion_tokens,
            cachedInputTokens: chunk.usage.prompt_tokens_details?.cached_tokens ?? 0,
            reasoningTokens: chunk.usage.completion_tokens_details?.reasoning_tokens ?? 0,
          },
        };
      }
    },
  });
  const decoder = new TextDecoder();
  const chunks = body[Symbol.asyncIterator]();
  for (;;) {
    const { value, done } = await chunks.next();
    if (done) break;
    parser.feed(decoder.decode(value, STREAM_DECODE));
    if (streamError) throw streamError;
    if (sawDone) break;
  }
  if (streamError) throw streamError;
  if (validChunks === 0 && malformedChunks > 0) {
    throw new RunnelError("RUNNEL_ERR_PROVIDER_BAD_RESPONSE", `none of the provider's ${malformedChunks} chunks was valid`);
  }
  // Either terminator is an honest end: a finish reason without [DONE] is a
  // quirk of several compatible servers, [DONE] without a finish reason of others.
  if (finish === undefined) {
    if (!sawDone) throw new RunnelError("RUNNEL_ERR_PROVIDER_STREAM_CUT", "provider stream ended without a finish reason or [DONE]");
    finish = FinishReason.FINISH_REASON_STOP;
  }
  if (pendingUsage) call.emit(pendingUsage);
  call.emit({ $case: "done", value: { finishReason: finish } });
  // The client has its answer; read the end of the body (usually already
  // here) so the keep-alive connection returns to the pool instead of being
  // destroyed. A server that keeps it open past the limit loses it.
  if (sawDone) await drain(chunks, DRAIN_AFTER_DONE_MS);
}

async function drain(chunks: AsyncIterator<Uint8Array>, limitMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const rest = (async () => {
    for (;;) if ((await chunks.next()).done) return;
  })();
  rest.catch(() => {});
  await Promise.race([rest, new Promise<void>((resolve) => (timer = setTimeout(resolve, limitMs)))]);
  clearTimeout(timer);
}
