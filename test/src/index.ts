/** @runnel/test: harnesses shared by the tests and by `npm start`. */
export { type Backend, LoadBalancer, type LoadBalancerOptions } from "./load-balancer.js";
export { dockerAvailable, type NatsHandle, type StartNatsOptions, startNats } from "./nats-harness.js";
export { freePort, waitForPort } from "./ports.js";
export { REPO_ROOT, type ReplicatedService, type RunningService, type ServiceName, type Stack, type StackOptions, startStack, stopProcess } from "./stack.js";
