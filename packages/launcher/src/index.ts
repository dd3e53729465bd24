/** @runnel/launcher: a local nats-server and every service as real processes, for `npm start`, the benchmark and the tests. */
export { type Backend, LoadBalancer, type LoadBalancerOptions } from "./load-balancer.js";
export { dockerAvailable, NATS_SERVER_VERSION, type NatsHandle, type StartNatsOptions, startNats } from "./nats.js";
export { freePort, waitForPort } from "./ports.js";
export { reapOnExit } from "./reaper.js";
export {
  REPO_ROOT,
  type ReplicatedService,
  type RunningService,
  type ServiceName,
  type Stack,
  type StackOptions,
  startStack,
  stopProcess,
} from "./stack.js";
export { adminCommand, resolveConfigPath, type StartOptions, start } from "./start.js";
export {
  findJaeger,
  JAEGER_DEFAULT_PORTS,
  type JaegerBuild,
  type JaegerHandle,
  type JaegerPorts,
  jaegerConfig,
  startJaeger,
  startTraces,
  type Traces,
} from "./traces.js";
