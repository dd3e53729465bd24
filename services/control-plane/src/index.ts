export { buildControlPlane, type ControlPlane, type ControlPlaneDeps } from "./app.js";
export { SnapshotStore, snapshotFromConfig } from "./snapshot-store.js";
export { WorkerRegistry } from "./worker-registry.js";
