export { buildControlPlane, type ControlPlane, type ControlPlaneDeps } from "./app.js";
export { ConfigReloader, type ConfigReloaderOptions, type ReloadResult } from "./config-reloader.js";
export { healthSettingsFrom, providerStatus } from "./provider-status.js";
export { SnapshotStore, snapshotFromConfig } from "./snapshot-store.js";
export { inFlightByProvider, liveEntries, type PresenceEntry, WorkerPresence, workerStatus } from "./worker-presence.js";
