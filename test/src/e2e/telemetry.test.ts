/**
 * Telemetry as a contract, end to end: the real processes export OTLP
 * (http/json here) to an in-process receiver and serve /metrics. One streamed
 * request is one trace across the ingress and the worker with the right
 * parents and the gen_ai attributes; a dropped client's cancel brings the
 * control plane's work into the same trace; a failover, a resume and a cancel
 * are span events; no prompt, completion or key reaches a span or a log; the
 * logs of a stream carry its trace id; and every /metrics endpoint parses as
 * Prometheus text with counts that match what the test did. The exposition is
 * read by the Prometheus project's own parser (the Python client's, from the
 * test venv that npm test's bootstrap makes), which rejects a malformed one.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { REPO_ROOT } from "@runnel/launcher";
import { type CollectedSpan, type OtlpReceiver, SpanKind, startOtlpReceiver } from "../otlp-receiver.js";
import { type E2E, mockRequests, parseSse, startE2E } from "./helpers.js";

const CONFIG = join(REPO_ROOT, "test", "fixtures", "runnel.telemetry.yaml");
const LOGS = join(REPO_ROOT, ".runnel", "logs", "telemetry");
const PROMPT_CANARY = "canary-prompt-6c1e0b2f";

function body(model: string, content = "Tell me about rivers."): string {
  return JSON.stringify({ model, stream: true, messages: [{ role: "user", content }] });
}

interface Chunk {
  choices: { delta: { content?: string } }[];
}

/** Streams a completion to its end; returns the stream id and the text. */
async function complete(ingressUrl: string, model: string, content?: string): Promise<{ streamId: string; text: string; raw: string }> {
  const response = await fetch(`${ingressUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: body(model, content),
  });
  assert.equal(response.status, 200);
  const raw = await response.text();
  const text = parseSse(raw)
    .events.filter((event) => event.data !== "[DONE]")
    .map((event) => (JSON.parse(event.data) as Chunk).choices[0]?.delta.content ?? "")
    .join("");
  return { streamId: response.headers.get("x-runnel-stream-id") ?? "", text, raw };
}

/** Opens a stream and reads `events` SSE events, then drops the connection. */
async function openAndDrop(ingressUrl: string, model: string, events: number): Promise<{ streamId: string; token: string; seq: number }> {
  const controller = new AbortController();
  const response = await fetch(`${ingressUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: body(model),
    signal: controller.signal,
  });
  const streamId = response.headers.get("x-runnel-stream-id") ?? "";
  const token = response.headers.get("x-runnel-resume-token") ?? "";
  const reader = response.body?.getReader();
  assert.ok(reader);
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    assert.equal(done, false, "the stream ended before the drop");
    text += decoder.decode(value, { stream: true });
    const parsed = parseSse(text.slice(0, text.lastIndexOf("\n\n") + 2)).events;
    if (parsed.length >= events) {
      controller.abort();
      return { streamId, token, seq: Number(parsed[parsed.length - 1]?.id ?? 0) };
    }
  }
}

const byKind = (spans: readonly CollectedSpan[], service: string, kind: number, name?: (name: string) => boolean) =>
  spans.filter((span) => span.service === service && span.kind === kind && (!name || name(span.name)));

function only<T>(items: readonly T[], what: string): T {
  assert.equal(items.length, 1, `expected exactly one ${what}, found ${items.length}`);
  return items[0] as T;
}

const eventNames = (span: CollectedSpan) => span.events.map((event) => event.name);

/** The ingress server span that opened `streamId` (it carries runnel.stream.id). */
const serverSpanOf = (streamId: string) => (spans: readonly CollectedSpan[]) =>
  spans.find((span) => span.service === "runnel-ingress" && span.kind === SpanKind.SERVER && span.attributes["runnel.stream.id"] === streamId);

interface PrometheusFamily {
  readonly name: string;
  /** counter, gauge, histogram, ... */
  readonly type: string;
  readonly samples: readonly { name: string; labels: Record<string, string>; value: number }[];
}

const PYTHON = process.env.RUNNEL_TEST_PYTHON ?? join(REPO_ROOT, ".tools", "venv", "bin", "python");

/** GET /metrics, parsed by prometheus_client's parser (test/python/parse_metrics.py). */
async function scrape(url: string): Promise<PrometheusFamily[]> {
  const response = await fetch(url);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  const json = execFileSync(PYTHON, [join(REPO_ROOT, "test", "python", "parse_metrics.py")], { input: text, encoding: "utf8" });
  return JSON.parse(json) as PrometheusFamily[];
}

const matches = (labels: Readonly<Record<string, string>>, wanted: Readonly<Record<string, string>>) =>
  Object.entries(wanted).every(([key, value]) => labels[key] === value);

/** Sum of the samples named `sample` (a counter's `x_total`, a histogram's `x_count`, a gauge) with `labels`. */
function total(families: readonly PrometheusFamily[], sample: string, labels: Readonly<Record<string, string>> = {}): number {
  return families
    .flatMap((family) => family.samples)
    .filter((each) => each.name === sample && matches(each.labels, labels))
    .reduce((sum, each) => sum + each.value, 0);
}

describe("telemetry", () => {
  let e2e: E2E;
  let receiver: OtlpReceiver;
  let healthPorts: { worker: number; controlPlane: number };

  before(async () => {
    receiver = await startOtlpReceiver();
    e2e = await startE2E("telemetry", CONFIG, {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.httpEndpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      // Export within the test's patience.
      OTEL_BSP_SCHEDULE_DELAY: "100",
      LOG_LEVEL: "debug",
    });
    healthPorts = {
      worker: e2e.stack.services.get("worker")?.healthPort ?? 0,
      controlPlane: e2e.stack.services.get("control-plane")?.healthPort ?? 0,
    };
  });
  after(async () => {
    await e2e?.[Symbol.asyncDispose]();
    await receiver?.close();
  });

  test("one streamed request is one trace: ingress server → publish → worker process → provider client span with gen_ai attributes", async () => {
    const { streamId } = await complete(e2e.stack.ingressUrl, "mock");
    await receiver.waitFor(
      (spans) => {
        const server = serverSpanOf(streamId)(spans);
        return (
          server !== undefined && spans.some((span) => span.traceId === server.traceId && span.service === "runnel-worker" && span.kind === SpanKind.CONSUMER)
        );
      },
      15_000,
      "trace of the request",
    );
    const server = serverSpanOf(streamId)(receiver.spans) as CollectedSpan;
    // The worker's spans end a moment after the client has its last byte.
    await receiver.waitFor((spans) => spans.filter((span) => span.traceId === server.traceId).length >= 4, 10_000, "four spans");
    const trace = receiver.trace(server.traceId);

    assert.equal(server.name, "POST /v1/chat/completions");
    assert.equal(server.attributes["http.route"], "/v1/chat/completions");
    assert.equal(server.parentSpanId, "", "the server span is the root");
    assert.ok(eventNames(server).includes("runnel.first_byte"), `server span events: ${eventNames(server)}`);

    const publish = only(byKind(trace, "runnel-ingress", SpanKind.PRODUCER), "publish span");
    assert.equal(publish.name, "publish runnel.jobs.submit");
    assert.equal(publish.parentSpanId, server.spanId);
    assert.equal(publish.attributes["messaging.system"], "nats");
    assert.equal(publish.attributes["messaging.destination.name"], "runnel.jobs.submit");
    assert.equal(publish.attributes["messaging.operation.type"], "send");

    const processing = only(byKind(trace, "runnel-worker", SpanKind.CONSUMER), "job process span");
    assert.equal(processing.name, "process runnel.jobs.submit");
    assert.equal(processing.parentSpanId, publish.spanId, "the worker continues the trace the job carried");
    assert.equal(processing.attributes["messaging.consumer.group.name"], "runnel-workers");
    assert.equal(processing.attributes["runnel.stream.id"], streamId);
    const end = processing.events.find((event) => event.name === "runnel.stream.end");
    assert.ok(end, `process span events: ${eventNames(processing)}`);
    assert.equal(end.attributes["runnel.stream.outcome"], "done");
    assert.deepEqual(end.attributes["gen_ai.response.finish_reasons"], ["stop"]);

    const client = only(byKind(trace, "runnel-worker", SpanKind.CLIENT), "provider client span");
    assert.equal(client.name, "chat mock");
    assert.equal(client.parentSpanId, processing.spanId);
    assert.equal(client.attributes["gen_ai.operation.name"], "chat");
    assert.equal(client.attributes["gen_ai.provider.name"], "runnel.mock");
    assert.equal(client.attributes["gen_ai.system"], "runnel.mock");
    assert.equal(client.attributes["gen_ai.request.model"], "mock");
    assert.equal(client.attributes["gen_ai.response.model"], "mock");
    assert.deepEqual(client.attributes["gen_ai.response.finish_reasons"], ["stop"]);
    assert.ok(Number(client.attributes["gen_ai.usage.input_tokens"]) > 0);
    assert.equal(client.attributes["gen_ai.usage.output_tokens"], 32);
    assert.ok(eventNames(client).includes("runnel.first_token"), `client span events: ${eventNames(client)}`);
    assert.ok(Number(client.attributes["gen_ai.response.time_to_first_chunk"]) >= 0);
    assert.notEqual(client.statusCode, 2);

    // No span per token: four spans for a 32-token stream.
    assert.equal(trace.length, 4, trace.map((span) => `${span.service} ${span.name}`).join(", "));

    for (const [span, service] of [
      [server, "ingress"],
      [processing, "worker"],
    ] as const) {
      assert.equal(span.resource["service.name"], `runnel-${service}`);
      assert.equal(span.resource["service.version"], "0.1.0");
      assert.equal(span.resource["service.instance.id"], e2e.stack.services.get(service)?.instanceId);
    }
  });

  test("the provider's request continues the trace under its attempt's span (W3C traceparent); a provider with propagateTrace: false gets none", async () => {
    const { streamId } = await complete(e2e.stack.ingressUrl, "mock", "trace me to the provider");
    await receiver.waitFor(
      (spans) => spans.some((span) => span.kind === SpanKind.CLIENT && span.attributes["runnel.stream.id"] === streamId),
      15_000,
      "the client span",
    );
    const client = receiver.spans.find((span) => span.kind === SpanKind.CLIENT && span.attributes["runnel.stream.id"] === streamId) as CollectedSpan;
    const seen = (await mockRequests(e2e.stack)).find((request) => request.messages.some((message) => message.text === "trace me to the provider"));
    assert.ok(seen, "the provider got the request");
    const [version, traceId, parentId, flags] = (seen.traceparent ?? "").split("-");
    assert.equal(version, "00");
    assert.equal(traceId, client.traceId, "the provider's request is in the request's trace");
    assert.equal(parentId, client.spanId, "under the attempt's client span");
    assert.equal(flags, "01", "sampled");

    await complete(e2e.stack.ingressUrl, "untraced", "no trace headers for me");
    const untraced = (await mockRequests(e2e.stack)).find((request) => request.messages.some((message) => message.text === "no trace headers for me"));
    assert.ok(untraced, "the provider got the request");
    assert.equal(untraced.traceparent, null);
  });

  test("the logs of a stream carry its trace id and span id", async () => {
    const { streamId } = await complete(e2e.stack.ingressUrl, "mock");
    const server = await receiver
      .waitFor((spans) => serverSpanOf(streamId)(spans) !== undefined, 10_000, "server span")
      .then((spans) => serverSpanOf(streamId)(spans) as CollectedSpan);
    for (const service of ["ingress", "worker"]) {
      const read = () =>
        readFileSync(join(LOGS, `${service}.log`), "utf8")
          .split("\n")
          .filter((line) => line.startsWith("{"))
          .map((line) => JSON.parse(line) as Record<string, unknown>)
          .filter((line) => line.stream_id === streamId);
      // The stack copies each process's output to its log file asynchronously.
      const deadline = Date.now() + 5_000;
      let lines = read();
      while (lines.length === 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        lines = read();
      }
      assert.ok(lines.length > 0, `${service} logged nothing about the stream`);
      for (const line of lines) {
        assert.equal(line.trace_id, server.traceId, `${service}: ${JSON.stringify(line)}`);
        assert.match(String(line.span_id), /^[0-9a-f]{16}$/);
      }
    }
  });

  test("no prompt, completion or provider key reaches a span or a log by default", async () => {
    const { streamId, text } = await complete(e2e.stack.ingressUrl, "mock", `Please repeat ${PROMPT_CANARY} back to me.`);
    assert.ok(text.length > 20);
    const server = await receiver
      .waitFor((spans) => serverSpanOf(streamId)(spans) !== undefined, 10_000)
      .then((spans) => serverSpanOf(streamId)(spans) as CollectedSpan);
    await receiver.waitFor((spans) => spans.some((span) => span.traceId === server.traceId && span.kind === SpanKind.CLIENT), 10_000);
    const exported = JSON.stringify(receiver.spans, (_key, value: unknown) => (typeof value === "bigint" ? value.toString() : value));
    assert.ok(!exported.includes(PROMPT_CANARY), "the prompt reached a span");
    assert.ok(!exported.includes(text), "the completion reached a span");
    assert.ok(!exported.includes(text.slice(0, 24)), "part of the completion reached a span");
    assert.ok(!exported.includes("sk-test-not-a-secret") && !exported.includes("sk-test-backup-not-a-secret"), "a provider key reached a span");
    for (const service of ["ingress", "worker", "control-plane"]) {
      const log = readFileSync(join(LOGS, `${service}.log`), "utf8");
      assert.ok(!log.includes(PROMPT_CANARY), `the prompt reached the ${service} log`);
      assert.ok(!log.includes("sk-test-not-a-secret"), `a provider key reached the ${service} log`);
    }
  });

  test("a failover shows as an event on the stream, beside a failed and a served attempt", async () => {
    const { streamId, text } = await complete(e2e.stack.ingressUrl, "failover");
    assert.ok(text.length > 0);
    const server = await receiver
      .waitFor((spans) => serverSpanOf(streamId)(spans) !== undefined, 10_000)
      .then((spans) => serverSpanOf(streamId)(spans) as CollectedSpan);
    await receiver.waitFor(
      (spans) =>
        spans.some(
          (span) => span.traceId === server.traceId && span.kind === SpanKind.CONSUMER && span.events.some((event) => event.name === "runnel.stream.end"),
        ),
      10_000,
      "the job's process span",
    );
    const trace = receiver.trace(server.traceId);
    const processing = only(byKind(trace, "runnel-worker", SpanKind.CONSUMER), "job process span");
    const failover = processing.events.find((event) => event.name === "runnel.failover");
    assert.ok(failover, `process span events: ${eventNames(processing)}`);
    assert.equal(failover.attributes["runnel.failover.mode"], "next_route");
    assert.equal(failover.attributes["runnel.failover.from"], "mock/mock?fail=500");
    assert.equal(failover.attributes["runnel.failover.to"], "backup/mock");
    assert.equal(failover.attributes["error.type"], "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.equal(processing.events.find((event) => event.name === "runnel.stream.end")?.attributes["runnel.stream.outcome"], "failed_over");

    const attempts = byKind(trace, "runnel-worker", SpanKind.CLIENT).sort(
      (a, b) => Number(a.attributes["runnel.attempt.index"]) - Number(b.attributes["runnel.attempt.index"]),
    );
    assert.equal(attempts.length, 2, "one client span per attempt");
    const [failed, served] = attempts as [CollectedSpan, CollectedSpan];
    assert.equal(failed.attributes["runnel.route.provider"], "mock");
    assert.equal(failed.attributes["error.type"], "RUNNEL_ERR_PROVIDER_UNAVAILABLE");
    assert.equal(failed.statusCode, 2);
    assert.equal(served.attributes["runnel.route.provider"], "backup");
    assert.equal(served.attributes["gen_ai.response.model"], "mock");
    assert.ok(eventNames(served).includes("runnel.first_token"));
    for (const attempt of attempts) assert.equal(attempt.parentSpanId, processing.spanId);
  });

  test("a dropped client's cancel is in the request's trace: the control plane's CancelStream and the worker's cancel", async () => {
    const { streamId } = await openAndDrop(e2e.stack.ingressUrl, "long", 3);
    const server = await receiver
      .waitFor((spans) => serverSpanOf(streamId)(spans) !== undefined, 10_000)
      .then((spans) => serverSpanOf(streamId)(spans) as CollectedSpan);
    // The detach grace (500 ms) runs out, the ingress cancels through the control plane, the worker aborts.
    await receiver.waitFor(
      (spans) =>
        spans.some(
          (span) => span.traceId === server.traceId && span.kind === SpanKind.CONSUMER && span.events.some((event) => event.name === "runnel.stream.end"),
        ) &&
        spans.some((span) => span.traceId === server.traceId && span.name === "process runnel.ctl.cancel.{worker_id}") &&
        spans.some((span) => span.traceId === server.traceId && span.service === "runnel-control-plane" && span.kind === SpanKind.SERVER),
      15_000,
      "the cancel in the request's trace",
    );
    const trace = receiver.trace(server.traceId);
    const grpcClient = only(
      byKind(trace, "runnel-ingress", SpanKind.CLIENT, (name) => name.endsWith("StreamAdminService/CancelStream")),
      "CancelStream client span",
    );
    const grpcServer = only(
      byKind(trace, "runnel-control-plane", SpanKind.SERVER, (name) => name.endsWith("StreamAdminService/CancelStream")),
      "CancelStream server span",
    );
    assert.equal(grpcServer.parentSpanId, grpcClient.spanId, "gRPC metadata carries the context");
    const cancelPublish = only(byKind(trace, "runnel-control-plane", SpanKind.PRODUCER), "cancel publish span");
    assert.equal(cancelPublish.name, "publish runnel.ctl.cancel.{worker_id}");
    assert.equal(cancelPublish.parentSpanId, grpcServer.spanId);
    assert.equal(cancelPublish.attributes["messaging.destination.template"], "runnel.ctl.cancel.{worker_id}");
    const cancelProcess = only(
      byKind(trace, "runnel-worker", SpanKind.CONSUMER, (name) => name.startsWith("process runnel.ctl.cancel")),
      "cancel process span",
    );
    assert.equal(cancelProcess.parentSpanId, cancelPublish.spanId, "NATS headers carry the context");

    const processing = only(
      byKind(trace, "runnel-worker", SpanKind.CONSUMER, (name) => name === "process runnel.jobs.submit"),
      "job process span",
    );
    const cancel = processing.events.find((event) => event.name === "runnel.cancel");
    assert.ok(cancel, `process span events: ${eventNames(processing)}`);
    assert.match(String(cancel.attributes["runnel.cancel.reason"]), /not resumed within 500 ms/);
    assert.equal(processing.events.find((event) => event.name === "runnel.stream.end")?.attributes["runnel.stream.outcome"], "cancelled");
  });

  test("a resume is an event on its own request's span, the resume token never reaches a span, and DELETE's cancel is traced through the control plane", async () => {
    const { streamId, token, seq } = await openAndDrop(e2e.stack.ingressUrl, "long", 3);
    const controller = new AbortController();
    const resumed = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}/events?after=${seq}&token=${encodeURIComponent(token)}`, {
      signal: controller.signal,
    });
    assert.equal(resumed.status, 200);
    const reader = resumed.body?.getReader();
    await reader?.read();
    const deleted = await fetch(`${e2e.stack.ingressUrl}/v1/streams/${streamId}`, { method: "DELETE", headers: { "x-runnel-resume-token": token } });
    assert.equal(deleted.status, 200);
    controller.abort();

    const resumeSpan = await receiver
      .waitFor(
        (spans) =>
          spans.some((span) => span.name === "GET /v1/streams/:id/events" && span.events.some((event) => event.attributes["runnel.stream.id"] === streamId)),
        10_000,
        "the resume's span",
      )
      .then(
        (spans) =>
          spans.find(
            (span) => span.name === "GET /v1/streams/:id/events" && span.events.some((event) => event.attributes["runnel.stream.id"] === streamId),
          ) as CollectedSpan,
      );
    const resume = resumeSpan.events.find((event) => event.name === "runnel.resume");
    assert.ok(resume);
    assert.equal(resume.attributes["runnel.resume.after"], seq);
    assert.equal(resume.attributes["runnel.resume.via"], "sse");
    const exported = JSON.stringify(receiver.spans, (_key, value: unknown) => (typeof value === "bigint" ? value.toString() : value));
    assert.ok(!exported.includes(token), "the resume token reached a span");

    const deleteSpan = await receiver
      .waitFor(
        (spans) =>
          spans.some(
            (span) =>
              span.name === "DELETE /v1/streams/:id" &&
              spans.some((each) => each.traceId === span.traceId && each.name.startsWith("process runnel.ctl.cancel")),
          ),
        10_000,
        "the DELETE's trace",
      )
      .then(
        (spans) =>
          spans.find(
            (span) =>
              span.name === "DELETE /v1/streams/:id" &&
              spans.some((each) => each.traceId === span.traceId && each.name.startsWith("process runnel.ctl.cancel")),
          ) as CollectedSpan,
      );
    const trace = receiver.trace(deleteSpan.traceId);
    assert.ok(byKind(trace, "runnel-control-plane", SpanKind.SERVER, (name) => name.endsWith("StreamAdminService/CancelStream")).length === 1);
    assert.ok(deleteSpan.events.some((event) => event.name === "runnel.cancel" && event.attributes["runnel.cancel.path"] === "control_plane"));
  });

  test("/metrics of every service parses as Prometheus text, with counts that match the requests", async () => {
    const urls = {
      ingress: `${e2e.stack.ingressUrl}/metrics`,
      worker: `http://127.0.0.1:${healthPorts.worker}/metrics`,
      controlPlane: `http://127.0.0.1:${healthPorts.controlPlane}/metrics`,
    };
    const before = { ingress: await scrape(urls.ingress), worker: await scrape(urls.worker) };
    const streams = 3;
    for (let index = 0; index < streams; index += 1) await complete(e2e.stack.ingressUrl, "mock");
    await complete(e2e.stack.ingressUrl, "failover");
    // The worker records a stream's end just after the client's last byte.
    const deadline = Date.now() + 5_000;
    let worker = await scrape(urls.worker);
    while (total(worker, "runnel_stream_outcomes_total") - total(before.worker, "runnel_stream_outcomes_total") < streams + 1 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      worker = await scrape(urls.worker);
    }
    const ingress = await scrape(urls.ingress);
    const controlPlane = await scrape(urls.controlPlane);
    const delta = (now: PrometheusFamily[], then: PrometheusFamily[], name: string, labels?: Record<string, string>) =>
      total(now, name, labels) - total(then, name, labels);

    assert.equal(delta(ingress, before.ingress, "runnel_ingress_streams_opened_total", { runnel_transport: "sse" }), streams + 1);
    assert.equal(total(ingress, "runnel_ingress_streams_active"), 0, "every stream ended");
    assert.equal(delta(ingress, before.ingress, "runnel_ingress_time_to_first_byte_count"), streams + 1);
    assert.equal(
      delta(ingress, before.ingress, "messaging_client_operation_duration_count", { messaging_destination_name: "runnel.jobs.submit" }),
      streams + 1,
    );
    assert.ok(total(ingress, "runnel_ingress_resumes_total", { runnel_resume_via: "sse" }) >= 1, "the resume of the test before");

    assert.equal(delta(worker, before.worker, "runnel_stream_outcomes_total", { outcome: "done" }), streams);
    assert.equal(delta(worker, before.worker, "runnel_stream_outcomes_total", { outcome: "failed_over" }), 1);
    assert.equal(delta(worker, before.worker, "runnel_stream_failovers_total", { runnel_failover_mode: "next_route" }), 1);
    assert.ok(total(worker, "runnel_stream_cancels_total") >= 2, "the cancels of the tests before");
    assert.equal(delta(worker, before.worker, "gen_ai_client_operation_time_to_first_chunk_count", { gen_ai_operation_name: "chat" }), streams + 1);
    assert.equal(delta(worker, before.worker, "gen_ai_client_token_usage_count", { gen_ai_token_type: "output" }), streams + 1);
    assert.equal(
      delta(worker, before.worker, "gen_ai_client_operation_duration_count", { runnel_route_provider: "mock", error_type: "RUNNEL_ERR_PROVIDER_UNAVAILABLE" }),
      1,
    );
    assert.equal(delta(worker, before.worker, "runnel_job_queue_lag_count"), streams + 1);
    const histogram = worker.find((family) => family.name === "gen_ai_client_operation_duration");
    assert.equal(histogram?.type, "histogram");

    const circuit = controlPlane.find((family) => family.name === "runnel_route_circuit_state");
    assert.ok(circuit, "the control plane exports circuit states");
    assert.equal(circuit.type, "gauge");
    assert.ok(
      circuit.samples.some((sample) => matches(sample.labels, { runnel_route_provider: "backup", gen_ai_request_model: "mock" }) && sample.value === 0),
    );
    for (const families of [ingress, worker, controlPlane]) assert.equal(total(families, "target_info"), 1);

    // The Grafana dashboard only reads series the services export (those of rarer events aside, which this test does not cause).
    const exported = new Set([ingress, worker, controlPlane].flatMap((families) => families.flatMap((family) => family.samples.map((sample) => sample.name))));
    const rare = new Set(["runnel_stream_hedges_total", "runnel_provider_retries_total", "runnel_ingress_slow_client_events_total", "runnel_slow_client_kind"]);
    const dashboard = readFileSync(join(REPO_ROOT, "deploy", "grafana", "runnel.json"), "utf8");
    const labels = new Set(
      [ingress, worker, controlPlane].flatMap((families) => families.flatMap((family) => family.samples.flatMap((sample) => Object.keys(sample.labels)))),
    );
    const used = new Set((dashboard.match(/\b(?:runnel|gen_ai|messaging)_[a-z_]+/g) ?? []).filter((name) => !labels.has(name)));
    assert.ok(used.size > 10);
    for (const name of used) assert.ok(exported.has(name) || rare.has(name), `the dashboard reads ${name}, which no service exports`);
  });
});
