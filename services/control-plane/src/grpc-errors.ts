/**
 * Failures at the control plane's gRPC edge: the one place an error becomes
 * a gRPC status. Handlers throw what they throw (a status, a RunnelError,
 * anything); `grpcError` maps it.
 */
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { RunnelError } from "@runnel/shared/contracts";
import type { Logger } from "@runnel/shared/runtime";

/** A gRPC status with its details. */
export function serviceError(code: status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}

/**
 * The one mapping of a failure to a gRPC status: a status as thrown, a
 * RunnelError by its catalogued gRPC code (with its RUNNEL_ERR_* code in the
 * `runnel-error-code` trailer), anything else INTERNAL (logged).
 */
export function grpcError(log: Logger, error: unknown): ServiceError {
  if (isServiceError(error)) return error;
  if (error instanceof RunnelError) {
    if (error.spec.grpcCode === status.INTERNAL) log.error({ err: error, code: error.code }, "admin call failed");
    const failed = serviceError(error.spec.grpcCode, error.message);
    failed.metadata.set("runnel-error-code", error.code);
    return failed;
  }
  log.error({ err: error }, "admin call failed");
  return serviceError(status.INTERNAL, error instanceof Error ? error.message : String(error));
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number";
}
