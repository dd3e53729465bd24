/**
 * A tiny round-robin TCP load balancer, standing for a Kubernetes Service
 * (kube-proxy) in front of the ingress replicas in the rolling-restart
 * simulation. What it models, and what it does not:
 *
 * - New connections go to the backends in rotation, one after the other.
 *   Like kube-proxy it balances connections, not requests: an open
 *   connection (an SSE response, a WebSocket, an idle keep-alive connection
 *   in a client's pool) stays on its backend until one side closes it.
 * - A backend is in rotation while its readiness probe (`GET /readyz` on a
 *   fresh connection every `probeIntervalMs`, as the kubelet probes) passes
 *   and it is not terminating.
 * - `terminate()` takes a backend out the way the endpoints controller does
 *   when a pod is deleted: at once, whatever its readiness, but only after
 *   `propagationMs`, the time kube-proxy (or a gateway) takes to learn of it.
 *   A preStop sleep longer than that is what keeps new connections off a pod
 *   that is about to close its listener.
 * - `restore()` is the replacement pod at the same address: back in rotation
 *   once its probe passes.
 * - Not modelled: iptables/IPVS rules, conntrack, several nodes each with its
 *   own kube-proxy learning at its own pace, or probe failure thresholds.
 */
import { request } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";

export interface Backend {
  readonly name: string;
  readonly port: number;
}

export interface LoadBalancerOptions {
  /** How often each backend's /readyz is probed. */
  readonly probeIntervalMs?: number;
  /** Delay between `terminate()` and the backend leaving the rotation. */
  readonly propagationMs?: number;
}

interface Target {
  readonly backend: Backend;
  ready: boolean;
  terminating: boolean;
  probing: boolean;
  /** Connections sent to it so far. */
  connections: number;
}

export class LoadBalancer implements AsyncDisposable {
  readonly #server: Server;
  readonly #targets: Target[];
  readonly #sockets = new Set<Socket>();
  readonly #probe: NodeJS.Timeout;
  readonly #propagationMs: number;
  #next = 0;
  /** Connections closed at once because no backend was in rotation. */
  refused = 0;
  /** Connections whose backend could not be reached (it went away between a probe and the connect). */
  upstreamErrors = 0;

  private constructor(server: Server, backends: readonly Backend[], options: LoadBalancerOptions) {
    this.#server = server;
    this.#targets = backends.map((backend) => ({ backend, ready: false, terminating: false, probing: false, connections: 0 }));
    this.#propagationMs = options.propagationMs ?? 0;
    this.#probe = setInterval(() => this.#probeAll(), options.probeIntervalMs ?? 100);
    server.on("connection", (client) => this.#forward(client));
  }

  /** Listens on a free port of 127.0.0.1; resolves once every backend is in rotation. */
  static async start(backends: readonly Backend[], options: LoadBalancerOptions = {}): Promise<LoadBalancer> {
    const server = createServer({ allowHalfOpen: true, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const balancer = new LoadBalancer(server, backends, options);
    await balancer.waitInRotation(
      backends.map((backend) => backend.name),
      10_000,
    );
    return balancer;
  }

  get url(): string {
    const address = this.#server.address();
    return `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  }

  /** Names of the backends new connections may go to now. */
  inRotation(): string[] {
    return this.#targets.filter((target) => target.ready && !target.terminating).map((target) => target.backend.name);
  }

  /** Connections each backend was sent so far. */
  connections(): Record<string, number> {
    return Object.fromEntries(this.#targets.map((target) => [target.backend.name, target.connections]));
  }

  /** The pod is being deleted: out of rotation once the removal has propagated (resolves then). */
  async terminate(name: string): Promise<void> {
    const target = this.#target(name);
    await new Promise((resolve) => setTimeout(resolve, this.#propagationMs));
    target.terminating = true;
  }

  /** A new pod at the same address: in rotation again once its readiness probe passes. */
  restore(name: string): void {
    const target = this.#target(name);
    target.terminating = false;
    target.ready = false;
  }

  /** Resolves once every named backend is in rotation. */
  async waitInRotation(names: readonly string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!names.every((name) => this.inRotation().includes(name))) {
      if (Date.now() > deadline) throw new Error(`not in rotation after ${timeoutMs} ms: ${names.filter((name) => !this.inRotation().includes(name))}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#probe);
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #target(name: string): Target {
    const target = this.#targets.find((each) => each.backend.name === name);
    if (!target) throw new Error(`no backend ${name}`);
    return target;
  }

  #pick(): Target | undefined {
    for (let tried = 0; tried < this.#targets.length; tried += 1) {
      const target = this.#targets[this.#next % this.#targets.length] as Target;
      this.#next += 1;
      if (target.ready && !target.terminating) return target;
    }
    return undefined;
  }

  #forward(client: Socket): void {
    const target = this.#pick();
    if (!target) {
      this.refused += 1;
      client.destroy();
      return;
    }
    target.connections += 1;
    const upstream = connect({ host: "127.0.0.1", port: target.backend.port, allowHalfOpen: true, noDelay: true });
    this.#sockets.add(client);
    this.#sockets.add(upstream);
    const forget = () => {
      this.#sockets.delete(client);
      this.#sockets.delete(upstream);
    };
    client.once("close", forget);
    upstream.once("close", forget);
    // A reset on either side is a reset on the other; an orderly end travels through the pipes (after the data).
    client.on("error", () => upstream.destroy());
    upstream.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED") this.upstreamErrors += 1;
      client.destroy();
    });
    client.pipe(upstream);
    upstream.pipe(client);
  }

  #probeAll(): void {
    for (const target of this.#targets) {
      if (target.probing) continue;
      target.probing = true;
      probeReady(target.backend.port).then((ready) => {
        target.ready = ready;
        target.probing = false;
      });
    }
  }
}

/** One readiness probe: `GET /readyz` on a new connection, 200 within 500 ms. */
function probeReady(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = request({ host: "127.0.0.1", port, path: "/readyz", agent: false, timeout: 500, headers: { connection: "close" } }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    probe.on("timeout", () => probe.destroy());
    probe.on("error", () => resolve(false));
    probe.end();
  });
}
