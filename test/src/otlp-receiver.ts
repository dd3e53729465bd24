/**
 * An in-process OTLP trace receiver for tests: what the real service
 * processes export, over the real protocols. OTLP/HTTP on one port
 * (`/v1/traces`, both `application/json` and `application/x-protobuf`, gzip
 * or not) and OTLP/gRPC on another (`TraceService/Export`). Protobuf is
 * decoded field by field from the OTLP proto's field numbers (trace.proto,
 * common.proto), enough for what the tests read: resources, spans, their
 * attributes, events and status. Metrics and logs requests are accepted and
 * dropped.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";
import { BinaryReader, type WireType } from "@bufbuild/protobuf/wire";
import { Server as GrpcServer, ServerCredentials, type ServerUnaryCall, type sendUnaryData } from "@grpc/grpc-js";

export type AttributeValue = string | number | boolean | AttributeValue[] | null;

export interface CollectedEvent {
  readonly name: string;
  readonly timeUnixNano: bigint;
  readonly attributes: Readonly<Record<string, AttributeValue>>;
}

export interface CollectedSpan {
  /** The exporting process's resource. */
  readonly resource: Readonly<Record<string, AttributeValue>>;
  /** `service.name` of the resource. */
  readonly service: string;
  readonly scope: string;
  readonly traceId: string;
  readonly spanId: string;
  /** "" for a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  /** 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  readonly kind: number;
  readonly startTimeUnixNano: bigint;
  readonly endTimeUnixNano: bigint;
  readonly attributes: Readonly<Record<string, AttributeValue>>;
  readonly events: readonly CollectedEvent[];
  /** 0 unset, 1 ok, 2 error. */
  readonly statusCode: number;
  /** How it arrived. */
  readonly protocol: "http/json" | "http/protobuf" | "grpc";
}

export const SpanKind = { INTERNAL: 1, SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 } as const;

export interface OtlpReceiver extends AsyncDisposable {
  /** OTEL_EXPORTER_OTLP_ENDPOINT for http/json and http/protobuf. */
  readonly httpEndpoint: string;
  /** OTEL_EXPORTER_OTLP_ENDPOINT for grpc. */
  readonly grpcEndpoint: string;
  readonly spans: readonly CollectedSpan[];
  /** Raw bodies received (content type, size), for protocol checks. */
  readonly requests: readonly { path: string; contentType: string; bytes: number }[];
  /** Waits until `predicate` holds over the spans received so far; returns them. */
  waitFor(predicate: (spans: readonly CollectedSpan[]) => boolean, timeoutMs?: number, what?: string): Promise<readonly CollectedSpan[]>;
  /** Every span of one trace. */
  trace(traceId: string): CollectedSpan[];
  close(): Promise<void>;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: CollectedSpan[] = [];
  const requests: { path: string; contentType: string; bytes: number }[] = [];

  const http: Server = createServer((request, response) => {
    readBody(request).then(
      (body) => {
        const path = (request.url ?? "").split("?")[0] ?? "";
        const contentType = String(request.headers["content-type"] ?? "");
        requests.push({ path, contentType, bytes: body.length });
        const json = contentType.includes("json");
        try {
          if (path === "/v1/traces") spans.push(...(json ? fromJson(JSON.parse(body.toString("utf8"))) : fromProtobuf(body, "http/protobuf")));
        } catch (error) {
          response.writeHead(400, { "content-type": "text/plain" }).end(String(error));
          return;
        }
        response.writeHead(200, { "content-type": json ? "application/json" : "application/x-protobuf" }).end(json ? "{}" : "");
      },
      (error: unknown) => response.writeHead(400).end(String(error)),
    );
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));

  const grpc = new GrpcServer();
  grpc.addService(
    {
      export: {
        path: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        requestStream: false,
        responseStream: false,
        requestSerialize: (value: Buffer) => value,
        requestDeserialize: (bytes: Buffer) => bytes,
        // An empty ExportTraceServiceResponse.
        responseSerialize: () => Buffer.alloc(0),
        responseDeserialize: () => ({}),
      },
    },
    {
      export: (call: ServerUnaryCall<Buffer, object>, callback: sendUnaryData<object>) => {
        requests.push({ path: "grpc:TraceService/Export", contentType: "application/grpc", bytes: call.request.length });
        try {
          spans.push(...fromProtobuf(call.request, "grpc"));
          callback(null, {});
        } catch (error) {
          callback(error as Error);
        }
      },
    },
  );
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpc.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))),
  );

  const close = async () => {
    await new Promise<void>((resolve) => http.close(() => resolve()));
    http.closeAllConnections();
    await new Promise<void>((resolve) => grpc.tryShutdown(() => resolve()));
  };
  return {
    httpEndpoint: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    grpcEndpoint: `http://127.0.0.1:${grpcPort}`,
    spans,
    requests,
    async waitFor(predicate, timeoutMs = 15_000, what = "the expected spans") {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(spans)) {
        if (Date.now() > deadline) {
          const names = spans.map((span) => `${span.service}: ${span.name}`).join("\n  ");
          throw new Error(`no ${what} within ${timeoutMs} ms; received ${spans.length} spans:\n  ${names}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return spans;
    },
    trace: (traceId) => spans.filter((span) => span.traceId === traceId),
    close,
    [Symbol.asyncDispose]: close,
  };
}

async function readBody(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  return request.headers["content-encoding"] === "gzip" ? gunzipSync(body) : body;
}

// ---- OTLP/JSON (ids are hex strings, 64-bit integers may be strings)

interface JsonKeyValue {
  key: string;
  value?: JsonAnyValue;
}
interface JsonAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  arrayValue?: { values?: JsonAnyValue[] };
}
interface JsonSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes?: JsonKeyValue[];
  events?: { name: string; timeUnixNano: string | number; attributes?: JsonKeyValue[] }[];
  status?: { code?: number };
}
interface JsonRequest {
  resourceSpans?: { resource?: { attributes?: JsonKeyValue[] }; scopeSpans?: { scope?: { name?: string }; spans?: JsonSpan[] }[] }[];
}

function jsonValue(value: JsonAnyValue | undefined): AttributeValue {
  if (!value) return null;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.arrayValue) return (value.arrayValue.values ?? []).map(jsonValue);
  return null;
}

function jsonAttributes(list: JsonKeyValue[] | undefined): Record<string, AttributeValue> {
  return Object.fromEntries((list ?? []).map((entry) => [entry.key, jsonValue(entry.value)]));
}

function fromJson(request: JsonRequest): CollectedSpan[] {
  const out: CollectedSpan[] = [];
  for (const resourceSpans of request.resourceSpans ?? []) {
    const resource = jsonAttributes(resourceSpans.resource?.attributes);
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
      for (const span of scopeSpans.spans ?? []) {
        out.push({
          resource,
          service: String(resource["service.name"] ?? ""),
          scope: scopeSpans.scope?.name ?? "",
          traceId: span.traceId,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId ?? "",
          name: span.name,
          kind: span.kind,
          startTimeUnixNano: BigInt(span.startTimeUnixNano),
          endTimeUnixNano: BigInt(span.endTimeUnixNano),
          attributes: jsonAttributes(span.attributes),
          events: (span.events ?? []).map((event) => ({
            name: event.name,
            timeUnixNano: BigInt(event.timeUnixNano),
            attributes: jsonAttributes(event.attributes),
          })),
          statusCode: span.status?.code ?? 0,
          protocol: "http/json",
        });
      }
    }
  }
  return out;
}

// ---- OTLP protobuf (opentelemetry/proto/trace/v1/trace.proto, common/v1/common.proto)

/** Calls `field` for every field of the message in `bytes`. */
function fields(bytes: Uint8Array, field: (number: number, type: WireType, reader: BinaryReader) => void): void {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [number, type] = reader.tag();
    const start = reader.pos;
    field(number, type, reader);
    // A field the callback did not read is skipped.
    if (reader.pos === start) reader.skip(type, number);
  }
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

function anyValue(bytes: Uint8Array): AttributeValue {
  let value: AttributeValue = null;
  fields(bytes, (number, _type, reader) => {
    if (number === 1) value = reader.string();
    else if (number === 2) value = reader.bool();
    else if (number === 3) value = Number(reader.int64());
    else if (number === 4) value = reader.double();
    else if (number === 5) {
      const values: AttributeValue[] = [];
      fields(reader.bytes(), (inner, _innerType, innerReader) => {
        if (inner === 1) values.push(anyValue(innerReader.bytes()));
      });
      value = values;
    }
  });
  return value;
}

function keyValue(bytes: Uint8Array): [string, AttributeValue] {
  let key = "";
  let value: AttributeValue = null;
  fields(bytes, (number, _type, reader) => {
    if (number === 1) key = reader.string();
    else if (number === 2) value = anyValue(reader.bytes());
  });
  return [key, value];
}

function fromProtobuf(body: Uint8Array, protocol: "http/protobuf" | "grpc"): CollectedSpan[] {
  const out: CollectedSpan[] = [];
  fields(body, (number, _type, reader) => {
    if (number !== 1) return;
    const resource: Record<string, AttributeValue> = {};
    const scopes: Uint8Array[] = [];
    fields(reader.bytes(), (resourceField, _resourceType, resourceReader) => {
      if (resourceField === 1) {
        fields(resourceReader.bytes(), (attributeField, _attributeType, attributeReader) => {
          if (attributeField === 1) {
            const [key, value] = keyValue(attributeReader.bytes());
            resource[key] = value;
          }
        });
      } else if (resourceField === 2) scopes.push(resourceReader.bytes());
    });
    for (const scopeBytes of scopes) {
      let scope = "";
      const spanBytes: Uint8Array[] = [];
      fields(scopeBytes, (scopeField, _scopeType, scopeReader) => {
        if (scopeField === 1) {
          fields(scopeReader.bytes(), (nameField, _nameType, nameReader) => {
            if (nameField === 1) scope = nameReader.string();
          });
        } else if (scopeField === 2) spanBytes.push(scopeReader.bytes());
      });
      for (const bytes of spanBytes) out.push(span(bytes, resource, scope, protocol));
    }
  });
  return out;
}

function span(bytes: Uint8Array, resource: Record<string, AttributeValue>, scope: string, protocol: "http/protobuf" | "grpc"): CollectedSpan {
  let traceId = "";
  let spanId = "";
  let parentSpanId = "";
  let name = "";
  let kind = 0;
  let start = 0n;
  let end = 0n;
  let statusCode = 0;
  const attributes: Record<string, AttributeValue> = {};
  const events: CollectedEvent[] = [];
  fields(bytes, (number, _type, reader) => {
    switch (number) {
      case 1:
        traceId = hex(reader.bytes());
        break;
      case 2:
        spanId = hex(reader.bytes());
        break;
      case 4:
        parentSpanId = hex(reader.bytes());
        break;
      case 5:
        name = reader.string();
        break;
      case 6:
        kind = reader.int32();
        break;
      case 7:
        start = BigInt(reader.fixed64());
        break;
      case 8:
        end = BigInt(reader.fixed64());
        break;
      case 9: {
        const [key, value] = keyValue(reader.bytes());
        attributes[key] = value;
        break;
      }
      case 11: {
        let eventName = "";
        let time = 0n;
        const eventAttributes: Record<string, AttributeValue> = {};
        fields(reader.bytes(), (eventField, _eventType, eventReader) => {
          if (eventField === 1) time = BigInt(eventReader.fixed64());
          else if (eventField === 2) eventName = eventReader.string();
          else if (eventField === 3) {
            const [key, value] = keyValue(eventReader.bytes());
            eventAttributes[key] = value;
          }
        });
        events.push({ name: eventName, timeUnixNano: time, attributes: eventAttributes });
        break;
      }
      case 15:
        fields(reader.bytes(), (statusField, _statusType, statusReader) => {
          if (statusField === 3) statusCode = statusReader.int32();
        });
        break;
      default:
        break;
    }
  });
  return {
    resource,
    service: String(resource["service.name"] ?? ""),
    scope,
    traceId,
    spanId,
    parentSpanId,
    name,
    kind,
    startTimeUnixNano: start,
    endTimeUnixNano: end,
    attributes,
    events,
    statusCode,
    protocol,
  };
}
