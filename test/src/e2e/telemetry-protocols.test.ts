/**
 * The OTLP exporter follows the standard OTEL_* variables whatever the
 * protocol: in one stack the ingress exports over grpc, the worker over
 * http/protobuf and the control plane over http/json, and the receiver puts
 * one trace back together from the three.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type NatsHandle, REPO_ROOT, type Stack, startNats, startStack } from "@runnel/launcher";
import { type CollectedSpan, type OtlpReceiver, SpanKind, startOtlpReceiver } from "../otlp-receiver.js";

describe("telemetry over every OTLP protocol", () => {
  let receiver: OtlpReceiver;
  let nats: NatsHandle;
  let stack: Stack;

  before(async () => {
    receiver = await startOtlpReceiver();
    nats = await startNats();
    const otlp = (protocol: string, endpoint: string) => ({ OTEL_EXPORTER_OTLP_PROTOCOL: protocol, OTEL_EXPORTER_OTLP_ENDPOINT: endpoint });
    stack = await startStack({
      natsUrl: nats.url,
      env: { RUNNEL_CONFIG: join(REPO_ROOT, "test", "fixtures", "runnel.telemetry.yaml"), OTEL_BSP_SCHEDULE_DELAY: "100" },
      serviceEnv: {
        ingress: otlp("grpc", receiver.grpcEndpoint),
        worker: otlp("http/protobuf", receiver.httpEndpoint),
        "control-plane": otlp("http/json", receiver.httpEndpoint),
      },
      logDir: join(REPO_ROOT, ".runnel", "logs", "telemetry-protocols"),
    });
  });
  after(async () => {
    await stack?.stop();
    await nats?.stop();
    await receiver?.close();
  });

  test("grpc, http/protobuf and http/json spans join into one trace", async () => {
    // A long stream, cancelled with DELETE: the DELETE's trace crosses the ingress, the control plane and the worker.
    const controller = new AbortController();
    const response = await fetch(`${stack.ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "long", stream: true, messages: [{ role: "user", content: "Hello" }] }),
      signal: controller.signal,
    });
    const streamId = response.headers.get("x-runnel-stream-id") ?? "";
    await response.body?.getReader().read();
    const deleted = await fetch(`${stack.ingressUrl}/v1/streams/${streamId}`, { method: "DELETE" });
    assert.equal(deleted.status, 200);
    controller.abort();

    const opened = (spans: readonly CollectedSpan[]) =>
      spans.find((span) => span.service === "runnel-ingress" && span.kind === SpanKind.SERVER && span.attributes["runnel.stream.id"] === streamId);
    await receiver.waitFor((spans) => {
      const server = opened(spans);
      // The job's process span ends last, once the cancelled stream has ended.
      return (
        server !== undefined && spans.some((span) => span.traceId === server.traceId && span.service === "runnel-worker" && span.kind === SpanKind.CONSUMER)
      );
    });
    const request = receiver.trace((opened(receiver.spans) as CollectedSpan).traceId);
    const protocols = Object.fromEntries(request.map((span) => [span.service, span.protocol]));
    assert.equal(protocols["runnel-ingress"], "grpc");
    assert.equal(protocols["runnel-worker"], "http/protobuf");
    const publish = request.find((span) => span.kind === SpanKind.PRODUCER) as CollectedSpan;
    const processing = request.find((span) => span.kind === SpanKind.CONSUMER) as CollectedSpan;
    assert.equal(processing.parentSpanId, publish.spanId);
    assert.equal(processing.attributes["runnel.stream.id"], streamId);

    await receiver.waitFor(
      (spans) =>
        spans.some(
          (span) =>
            span.name === "DELETE /v1/streams/:id" && spans.some((each) => each.traceId === span.traceId && each.name.startsWith("process runnel.ctl.cancel")),
        ),
      15_000,
      "the DELETE's trace",
    );
    const deleteSpan = receiver.spans.find((span) => span.name === "DELETE /v1/streams/:id") as CollectedSpan;
    const cancel = receiver.trace(deleteSpan.traceId);
    const byService = (service: string) => cancel.filter((span) => span.service === service);
    assert.deepEqual(new Set(byService("runnel-control-plane").map((span) => span.protocol)), new Set(["http/json"]));
    const cpServer = byService("runnel-control-plane").find((span) => span.kind === SpanKind.SERVER) as CollectedSpan;
    const ingressClient = byService("runnel-ingress").find((span) => span.kind === SpanKind.CLIENT) as CollectedSpan;
    assert.equal(cpServer.parentSpanId, ingressClient.spanId);
    const workerCancel = byService("runnel-worker").find((span) => span.name.startsWith("process runnel.ctl.cancel")) as CollectedSpan;
    assert.equal(workerCancel.protocol, "http/protobuf");
    assert.ok(receiver.requests.some((each) => each.contentType === "application/grpc"));
    assert.ok(receiver.requests.some((each) => each.contentType.startsWith("application/x-protobuf")));
    assert.ok(receiver.requests.some((each) => each.contentType.startsWith("application/json")));
  });
});
