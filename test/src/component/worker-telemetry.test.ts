/**
 * The worker's StreamObserver (services/worker/src/telemetry.ts) against an
 * in-memory span exporter and a real Prometheus rendering: the spans and
 * events of a hedge that wins, a retry, a lost hedge, a cancel; metrics
 * recorded once per attempt or stream.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { createMetrics, FailoverMode, type Job, tracer } from "@runnel/shared";
import { JobTelemetry, WorkerInstruments } from "@runnel/worker";

const exporter = new InMemorySpanExporter();
const contextManager = new AsyncLocalStorageContextManager();

function sampleJob(): Job {
  return {
    streamId: "stream-telemetry-1",
    model: "chat",
    request: {
      messages: [{ role: "user", content: [{ text: "a secret prompt", imageUrl: undefined }], name: "", toolCallId: "", toolCalls: [] }],
      temperature: 0.5,
      topP: undefined,
      maxTokens: 64,
      stop: [],
      tools: [],
      toolChoiceJson: "",
      includeUsage: false,
      seed: undefined,
      user: "",
    },
    routes: [],
    createdAtMs: Date.now() - 25,
    routingVersion: 1,
    traceContext: {},
    keyId: "",
    affinityKey: "",
    requestRef: "",
  } as unknown as Job;
}

describe("worker telemetry (StreamObserver)", () => {
  before(() => {
    trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
    context.setGlobalContextManager(contextManager.enable());
  });
  after(() => {
    trace.disable();
    context.disable();
  });

  test("a hedge wins after a retry: one client span per attempt, events where they belong, metrics per attempt", async () => {
    exporter.reset();
    const metrics = createMetrics({ service: "runnel-worker", version: "test", instanceId: "worker-test" });
    const instruments = new WorkerInstruments(metrics.meter);
    const jobSpan = tracer().startSpan("process runnel.jobs.submit");
    const observer = context.with(trace.setSpan(context.active(), jobSpan), () => new JobTelemetry(sampleJob(), instruments));
    const slow = { route: { provider: "primary", model: "gpt-a" }, providerType: "openai", index: 1, hedge: false, prefill: false };
    const hedge = { route: { provider: "backup", model: "claude-b" }, providerType: "anthropic", index: 2, hedge: true, prefill: false };
    observer.attemptStarted(slow);
    observer.retry("primary", 1, 200, "RUNNEL_ERR_PROVIDER_RATE_LIMITED");
    observer.attemptStarted(hedge);
    observer.firstToken(hedge, 120);
    observer.attemptEnded(slow, "RUNNEL_ERR_CANCELLED");
    const failover = {
      mode: FailoverMode.FAILOVER_MODE_HEDGE,
      from: slow.route,
      to: hedge.route,
      reasonCode: "",
      reason: "no first token within 100 ms",
      takeover: false,
    };
    observer.failover(failover);
    observer.ended("done", {
      served: hedge.route,
      usage: { inputTokens: 12, outputTokens: 40, cachedInputTokens: 0, reasoningTokens: 0 },
      finishReason: "stop",
    });
    jobSpan.end();

    const spans = exporter.getFinishedSpans();
    const byName = (name: string) => spans.find((span) => span.name === name) as ReadableSpan;
    const first = byName("chat gpt-a");
    const second = byName("chat claude-b");
    for (const span of [first, second]) assert.equal(span.parentSpanContext?.spanId, jobSpan.spanContext().spanId);
    assert.equal(first.attributes["gen_ai.provider.name"], "openai");
    assert.equal(first.attributes["error.type"], "RUNNEL_ERR_CANCELLED");
    assert.equal(first.status.code, 0, "a lost hedge is not a provider failure");
    assert.deepEqual(
      first.events.map((event) => [event.name, event.attributes?.["runnel.retry.attempt"]]),
      [["runnel.retry", 1]],
    );
    assert.equal(second.attributes["gen_ai.provider.name"], "anthropic");
    assert.equal(second.attributes["runnel.attempt.hedge"], true);
    assert.equal(second.attributes["gen_ai.usage.output_tokens"], 40);
    assert.equal(second.attributes["gen_ai.request.max_tokens"], 64);
    assert.equal(second.attributes["gen_ai.request.temperature"], 0.5);
    assert.deepEqual(second.attributes["gen_ai.response.finish_reasons"], ["stop"]);
    assert.deepEqual(
      second.events.map((event) => event.name),
      ["runnel.first_token"],
    );
    const job = byName("process runnel.jobs.submit");
    assert.deepEqual(
      job.events.map((event) => event.name),
      ["runnel.hedge", "runnel.failover", "runnel.stream.end"],
    );
    assert.equal(job.events.find((event) => event.name === "runnel.failover")?.attributes?.["runnel.failover.mode"], "hedge");
    assert.equal(job.attributes["runnel.stream.outcome"], "failed_over");
    assert.ok(!JSON.stringify(spans.map((span) => [span.attributes, span.events])).includes("secret prompt"));

    const text = await metrics.render();
    assert.match(text, /runnel_stream_hedges_total\{runnel_route_provider="backup"\} 1/);
    assert.match(text, /runnel_provider_retries_total\{runnel_route_provider="primary",error_type="RUNNEL_ERR_PROVIDER_RATE_LIMITED"\} 1/);
    assert.match(text, /runnel_stream_failovers_total\{runnel_failover_mode="hedge"\} 1/);
    assert.match(text, /runnel_stream_outcomes_total\{outcome="failed_over"\} 1/);
    assert.match(text, /gen_ai_client_operation_time_to_first_chunk_count\{[^}]*runnel_route_provider="backup"[^}]*\} 1/);
    assert.match(text, /gen_ai_client_operation_duration_count\{[^}]*error_type="RUNNEL_ERR_CANCELLED"[^}]*\} 1/);
    assert.match(text, /gen_ai_client_token_usage_sum\{[^}]*gen_ai_token_type="output"[^}]*\} 40/);
    assert.match(text, /runnel_job_queue_lag_count 1/);
    await metrics.shutdown();
  });

  test("a cancelled stream: the cancel with its reason, every open attempt ended, outcome cancelled", async () => {
    exporter.reset();
    const metrics = createMetrics({ service: "runnel-worker", version: "test", instanceId: "worker-test" });
    const jobSpan = tracer().startSpan("process runnel.jobs.submit");
    const observer = context.with(trace.setSpan(context.active(), jobSpan), () => new JobTelemetry(sampleJob(), new WorkerInstruments(metrics.meter)));
    const attempt = { route: { provider: "primary", model: "gpt-a" }, providerType: "openai", index: 1, hedge: false, prefill: false };
    observer.attemptStarted(attempt);
    observer.firstToken(attempt, 30);
    observer.cancelled("cancelled by the client (DELETE)");
    observer.ended("cancelled", { errorCode: "RUNNEL_ERR_CANCELLED" });
    observer.ended("cancelled", { errorCode: "RUNNEL_ERR_CANCELLED" });
    jobSpan.end();
    const spans = exporter.getFinishedSpans();
    assert.equal(spans.length, 2, "the attempt span ended once, with the job");
    const job = spans.find((span) => span.name.startsWith("process")) as ReadableSpan;
    assert.equal(job.events.find((event) => event.name === "runnel.cancel")?.attributes?.["runnel.cancel.reason"], "cancelled by the client (DELETE)");
    assert.equal(job.attributes["runnel.stream.outcome"], "cancelled");
    const text = await metrics.render();
    assert.match(text, /runnel_stream_cancels_total 1/);
    assert.match(text, /runnel_stream_outcomes_total\{outcome="cancelled",error_type="RUNNEL_ERR_CANCELLED"\} 1/);
    await metrics.shutdown();
  });
});
