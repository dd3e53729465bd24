/**
 * The one submit path: how a request becomes a new stream, whatever its API
 * and transport (chat completions, messages, a WebSocket request frame).
 * Every refusal happens before a stream exists and before the first await,
 * in one order: shutting down, the API key, the body (the API's parser),
 * the model. Then the job is built (session, client trace context) and the
 * stream opened: its live feed joined, the job submitted.
 */
import { type Job, RunnelError } from "@runnel/shared/contracts";
import { newStreamId } from "@runnel/shared/domain";
import type { ParsedRequest, RequestApi } from "./api.js";
import { buildJob, clientTraceContext, sessionFrom } from "./job.js";
import type { RouteContext } from "./routes/context.js";
import type { StreamReader } from "./stream-reader.js";

type Headers = Readonly<Record<string, string | string[] | undefined>>;

/** Where a stream's submission is logged: the request's logger (with its id), or the ingress's. */
export interface SubmitLog {
  debug(fields: object, message: string): void;
}

export interface SubmitInput<P extends ParsedRequest> {
  readonly api: RequestApi<P>;
  /** The request's headers: its API key, session id and trace context. */
  readonly headers: Headers;
  readonly body: unknown;
}

/** A request accepted for a new stream: checked, parsed, its job built, not submitted yet. */
export interface Submission<P extends ParsedRequest> {
  readonly api: RequestApi<P>;
  readonly streamId: string;
  /** The name of the key that opened it ("" with auth off). */
  readonly keyName: string;
  readonly request: P;
  readonly job: Job;
}

/** A stream just opened: its reader starts at seq 1. */
export interface OpenedStream<P extends ParsedRequest> extends Submission<P> {
  readonly reader: StreamReader;
  /** What every response of the stream carries beside its id: the resume token. */
  readonly headers: Readonly<Record<string, string>>;
}

/** Everything that can refuse a new stream, synchronously; throws the RunnelError the client gets. */
export function prepareStream<P extends ParsedRequest>(context: RouteContext, input: SubmitInput<P>): Submission<P> {
  context.refuseIfClosing();
  const keyName = context.auth.identify(input.headers);
  const request = input.api.parse(input.body);
  const routing = context.routing();
  if (!routing.model(request.model)) {
    throw new RunnelError("RUNNEL_ERR_MODEL_NOT_FOUND", `model: \`${request.model}\` does not exist (known: ${routing.modelNames.join(", ")})`, {
      param: "model",
    });
  }
  const streamId = newStreamId();
  const job = buildJob({
    streamId,
    model: request.model,
    request: request.chat,
    routing,
    keyId: keyName,
    session: sessionFrom(input.headers),
    traceContext: clientTraceContext(input.headers),
  });
  return { api: input.api, streamId, keyName, request, job };
}

/** Opens the stream of an accepted request; a refused publish is RUNNEL_ERR_OVERLOADED. `log`: the request's logger. */
export async function submitStream<P extends ParsedRequest>(context: RouteContext, submission: Submission<P>, log: SubmitLog): Promise<OpenedStream<P>> {
  const { streamId, request } = submission;
  const reader = await context.streams.open(submission.job);
  // Fields, not a child logger: a pino child per stream cost CPU and 1.9 KB of heap for as long as the stream was open.
  log.debug({ stream_id: streamId, model: request.model, streaming: request.streaming, api: submission.api.name }, "stream submitted");
  return { ...submission, reader, headers: { "x-runnel-resume-token": context.auth.resumeToken(streamId) } };
}

/** Checks, parses and opens a new stream: `prepareStream`, then `submitStream`. */
export function openStream<P extends ParsedRequest>(context: RouteContext, input: SubmitInput<P> & { readonly log: SubmitLog }): Promise<OpenedStream<P>> {
  return submitStream(context, prepareStream(context, input), input.log);
}
