/** The control plane's whole gRPC contract: its messages (control_plane_types.proto) and its services (control_plane.proto). */
export {
  RoutingServiceClient,
  type RoutingServiceServer,
  RoutingServiceService,
  StreamAdminServiceClient,
  type StreamAdminServiceServer,
  StreamAdminServiceService,
  WorkerServiceClient,
  type WorkerServiceServer,
  WorkerServiceService,
} from "./gen/runnel/v1/control_plane.js";
export * from "./gen/runnel/v1/control_plane_types.js";
