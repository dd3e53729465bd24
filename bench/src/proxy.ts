/**
 * The floor for one Node hop: a minimal pass-through reverse proxy (node:http,
 * a keep-alive Agent, no parsing, bodies piped both ways). Run as its own
 * process: `node bench/dist/proxy.js <port> <upstream base URL>`; prints
 * "listening <port>" once ready.
 */
import { Agent, createServer, request } from "node:http";

const port = Number(process.argv[2] ?? 0);
const upstream = new URL(process.argv[3] ?? "http://127.0.0.1:9001");
const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });

const server = createServer((incoming, outgoing) => {
  const forward = request(
    { host: upstream.hostname, port: upstream.port, method: incoming.method, path: incoming.url, headers: incoming.headers, agent },
    (answer) => {
      outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
      outgoing.flushHeaders();
      answer.pipe(outgoing);
    },
  );
  forward.on("error", () => outgoing.destroy());
  // The client leaving closes the upstream request at once, as a gateway should.
  outgoing.on("close", () => {
    if (!outgoing.writableFinished) forward.destroy();
  });
  incoming.pipe(forward);
});
server.on("connection", (socket) => socket.setNoDelay(true));
server.listen(port, "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(`listening ${typeof address === "object" && address ? address.port : port}\n`);
});
process.on("SIGTERM", () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});
