/**
 * The OpenAI Responses API (`POST /v1/responses`) is not served by the
 * gateway yet. It has its place in the transport switch, disabled, so that
 * the page says so rather than pretend; when the route exists, this is where
 * its transport goes (open: POST with `stream: true`, read its SSE events).
 */
import type { Transport } from "./types.js";

export const responsesTransport: Transport = {
  id: "responses",
  label: "Responses API",
  available: false,
  note: "POST /v1/responses is not served by this gateway yet",
  open() {
    throw new Error("the Responses API is not served yet");
  },
  resume() {
    throw new Error("the Responses API is not served yet");
  },
};
