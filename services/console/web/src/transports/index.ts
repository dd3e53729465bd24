/** Every transport of the playground's switch, in the order it shows them. */
import { longPollTransport } from "./longpoll.js";
import { ndjsonTransport } from "./ndjson.js";
import { responsesTransport } from "./responses.js";
import { sseTransport } from "./sse.js";
import type { Transport } from "./types.js";
import { websocketTransport } from "./websocket.js";

export type { ChatBody, Connection, StreamRef, Transport, TransportContext, WireItem } from "./types.js";

export const TRANSPORTS: readonly Transport[] = [sseTransport, websocketTransport, ndjsonTransport, longPollTransport, responsesTransport];

export function transportById(id: string): Transport | undefined {
  return TRANSPORTS.find((transport) => transport.id === id);
}
