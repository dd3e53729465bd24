/** A stream's record as stored (`runnel.v1.StreamState` at a KV revision), and what its phase says. No I/O. */
import { StreamPhase, type StreamState } from "./gen/runnel/v1/control_plane_types.js";

export interface StoredRecord {
  readonly state: StreamState;
  readonly revision: number;
}

export function isTerminalPhase(phase: StreamPhase): boolean {
  return phase === StreamPhase.STREAM_PHASE_DONE || phase === StreamPhase.STREAM_PHASE_FAILED || phase === StreamPhase.STREAM_PHASE_CANCELLED;
}
