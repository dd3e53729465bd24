/**
 * Serves the console's built pages and assets (`npm run build` writes them
 * to dist/public; build.mjs): the playground at `/`, the inspector at
 * `/console/streams`, their scripts and stylesheet under `/console/assets/`.
 *
 * The files are a fixed set known at build time (dist/public/manifest.json),
 * small, and compressed by the build, so they are read once at registration
 * and served from memory: the HTML `no-cache` (always revalidated, so a new
 * build is picked up at once), the content-hashed assets `immutable` for a
 * year, each with a strong ETag per encoding (brotli, gzip or none, as the
 * client accepts). Every page carries a strict Content-Security-Policy:
 * nothing but this origin (no inline script or style, no CDN, no font from
 * elsewhere), and connections to this origin only, WebSocket included.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

/** Where the built files are, unless told otherwise: this package's dist/public. */
export const DEFAULT_ASSETS_DIR = fileURLToPath(new URL("./public/", import.meta.url));

export interface ConsoleOptions {
  /** The build output (dist/public of this package by default). */
  readonly assetsDir?: string;
  /** Told when the assets are not built. */
  readonly log?: { warn(object: object, message: string): void };
}

export interface ConsoleAssets {
  /** False when the build output was missing: `/` then says how to build it. */
  readonly built: boolean;
  /** Files served (pages and assets). */
  readonly files: number;
}

interface Manifest {
  readonly files: Readonly<Record<string, { bytes: number; gzip: number; brotli: number }>>;
}

interface Representation {
  readonly body: Buffer;
  readonly etag: string;
}

interface Served {
  readonly type: string;
  readonly cacheControl: string;
  readonly identity: Representation;
  readonly gzip: Representation;
  readonly brotli: Representation;
}

const TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
};

/** Cache-Control of the pages: always revalidated (they name the current build's assets). */
export const PAGE_CACHE_CONTROL = "no-cache";
/** Cache-Control of the content-hashed assets: a new build has new names. */
export const ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable";

/** A Host header fit to name in a CSP source: a host name or address, maybe a port. */
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * The pages' Content-Security-Policy. `connect-src` names the WebSocket
 * origin beside 'self': older browsers do not count ws: as 'self'.
 */
export function contentSecurityPolicy(host: string | undefined): string {
  const ws = host && HOST.test(host) ? ` ws://${host} wss://${host}` : "";
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    `connect-src 'self'${ws}`,
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");
}

function representation(body: Buffer, suffix: string): Representation {
  return { body, etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}${suffix}"` };
}

function load(dir: string, path: string): Served {
  const file = join(dir, path);
  const type = TYPES[extname(path)] ?? "application/octet-stream";
  return {
    type,
    cacheControl: path.startsWith("assets/") ? ASSET_CACHE_CONTROL : PAGE_CACHE_CONTROL,
    identity: representation(readFileSync(file), ""),
    gzip: representation(readFileSync(`${file}.gz`), "-gz"),
    brotli: representation(readFileSync(`${file}.br`), "-br"),
  };
}

/** The representation an Accept-Encoding asks for (brotli, then gzip), ignoring any refused with q=0. */
function negotiate(served: Served, acceptEncoding: string | undefined): { chosen: Representation; encoding: string | undefined } {
  const accepted = new Set(
    (acceptEncoding ?? "")
      .split(",")
      .map((part) => part.trim().toLowerCase())
      .filter((part) => part.length > 0 && !/;\s*q=0(\.0*)?$/.test(part))
      .map((part) => part.split(";")[0]?.trim()),
  );
  if (accepted.has("br")) return { chosen: served.brotli, encoding: "br" };
  if (accepted.has("gzip")) return { chosen: served.gzip, encoding: "gzip" };
  return { chosen: served.identity, encoding: undefined };
}

function send(request: FastifyRequest, reply: FastifyReply, served: Served): FastifyReply {
  const { chosen, encoding } = negotiate(served, request.headers["accept-encoding"]);
  void reply.headers({
    "content-type": served.type,
    "cache-control": served.cacheControl,
    etag: chosen.etag,
    vary: "accept-encoding",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
  });
  if (encoding) void reply.header("content-encoding", encoding);
  if (served.type.startsWith("text/html")) {
    void reply.headers({
      "content-security-policy": contentSecurityPolicy(request.headers.host),
      "cross-origin-opener-policy": "same-origin",
      "x-frame-options": "DENY",
    });
  }
  const match = request.headers["if-none-match"];
  if (typeof match === "string" && match.split(",").some((tag) => tag.trim() === chosen.etag)) return reply.code(304).send();
  return reply.send(chosen.body);
}

/**
 * Registers the console's routes on an app (the ingress): `GET /`,
 * `GET /console` (to the inspector), `GET /console/streams` and
 * `GET /console/assets/<file>`. Reads the build output now; without one,
 * `/` answers 503 saying how to build it, and the rest of the app is
 * unaffected.
 */
export function registerConsole(app: FastifyInstance, options: ConsoleOptions = {}): ConsoleAssets {
  const dir = options.assetsDir ?? DEFAULT_ASSETS_DIR;
  const manifestPath = join(dir, "manifest.json");
  if (!existsSync(manifestPath)) {
    options.log?.warn({ assetsDir: dir }, "the console is not built (npm run build): / and /console/streams say so");
    const unbuilt = async (_request: FastifyRequest, reply: FastifyReply) =>
      reply
        .code(503)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store")
        .send("The Runnel console is not built: run `npm run build` (npm start and npm test build it too).\n");
    app.get("/", unbuilt);
    app.get("/console/streams", unbuilt);
    return { built: false, files: 0 };
  }
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as Manifest;
  const files = new Map(Object.keys(manifest.files).map((path) => [path, load(dir, path)]));
  const page = (path: string) => {
    const served = files.get(path);
    if (!served) throw new Error(`the console build has no ${path}`);
    return served;
  };
  const playground = page("index.html");
  const inspector = page("streams.html");
  app.get("/", async (request, reply) => send(request, reply, playground));
  app.get("/console", async (_request, reply) => reply.redirect("/console/streams"));
  app.get("/console/streams", async (request, reply) => send(request, reply, inspector));
  app.get("/console/assets/:file", async (request, reply) => {
    const { file } = request.params as { file: string };
    const served = files.get(`assets/${file}`);
    if (!served) return reply.callNotFound();
    return send(request, reply, served);
  });
  return { built: true, files: files.size };
}
