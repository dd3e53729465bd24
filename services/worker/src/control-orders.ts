/**
 * Orders to this worker over NATS: cancels of the streams it owns
 * (`runnel.ctl.cancel.<worker id>`, in the trace of whatever caused them)
 * and drains (`runnel.ctl.drain.<worker id>`, request-reply). A malformed
 * message is counted and logged; it never reaches past the callback (a
 * throw there would end nats.js's read loop for the whole connection).
 */
import type { MsgHdrs } from "@nats-io/nats-core";
import { CANCEL_SUBJECT_TEMPLATE, cancelSubject, controlPlane } from "@runnel/shared/contracts";
import { type Bus, type Logger, processMessage, RunnelAttributes, serveDrain } from "@runnel/shared/runtime";

export interface OrderHandlers {
  /** Cancels a stream this worker runs; false when it runs no such stream. */
  readonly cancel: (streamId: string, reason: string) => boolean;
  /** Stops taking jobs (idempotent). */
  readonly drain: () => void;
}

export interface ControlOrders {
  /** Malformed orders received (logged once in a thousand). */
  readonly malformed: number;
  close(): void;
}

export function listenForOrders(bus: Bus, workerId: string, handlers: OrderHandlers, log: Logger): ControlOrders {
  let malformed = 0;
  const cancels = bus.nc.subscribe(cancelSubject(workerId), {
    callback: (error, message) => {
      if (error) return;
      let request: controlPlane.CancelStreamRequest;
      try {
        request = controlPlane.CancelStreamRequest.decode(message.data);
      } catch (decodeError) {
        malformed += 1;
        if (malformed === 1 || malformed % 1000 === 0) log.warn({ err: decodeError, malformed }, "undecodable cancel order; ignored");
        return;
      }
      // In the trace of whatever caused the cancel (the client's request, through the control plane).
      processMessage(
        { subject: message.subject, template: CANCEL_SUBJECT_TEMPLATE, bodySize: message.data.length },
        message.headers as MsgHdrs | undefined,
        () => {
          if (handlers.cancel(request.streamId, request.reason || "cancelled")) {
            log.info({ stream_id: request.streamId, reason: request.reason }, "cancel received; aborting the provider request");
          }
        },
        { [RunnelAttributes.STREAM_ID]: request.streamId },
      );
    },
  });
  // A drain ordered through the control plane (DrainWorker).
  const drains = serveDrain(bus.nc, workerId, handlers.drain);
  return {
    get malformed() {
      return malformed;
    },
    close() {
      cancels.unsubscribe();
      drains.unsubscribe();
    },
  };
}
