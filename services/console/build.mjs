// Builds the console's static assets into dist/public (run by the bootstrap
// after `tsc -b`, and by `npm run build`): esbuild bundles the two pages'
// TypeScript and the stylesheet into content-hashed files under
// dist/public/assets, the HTML pages get those names, and every file is
// compressed once here (gzip and brotli) so the ingress serves it as it is.
// dist/public/manifest.json lists what was built, with sizes; the build
// fails when a page outgrows its budget (gzipped, everything it loads).
//
// esbuild rather than Vite: two entry points of plain TypeScript and one
// stylesheet need a bundler, not a dev server or a plugin pipeline, and
// esbuild is one package (plus its platform binary) with content hashing,
// code splitting and minification built in.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { build } from "esbuild";

const HERE = dirname(fileURLToPath(import.meta.url));
const OUT = join(HERE, "dist", "public");
const ASSETS = join(OUT, "assets");
/** Where the ingress serves dist/public/assets. */
const ASSETS_URL = "/console/assets";
/** Gzipped bytes a page may load in all (HTML, scripts, stylesheet). */
const BUDGET_GZIP_BYTES = 150 * 1024;

const PAGES = [
  { page: "index.html", entry: "playground" },
  { page: "streams.html", entry: "inspector" },
];

rmSync(OUT, { recursive: true, force: true });
mkdirSync(ASSETS, { recursive: true });

const result = await build({
  absWorkingDir: HERE,
  entryPoints: {
    playground: "web/src/playground.ts",
    inspector: "web/src/inspector.ts",
    console: "web/src/console.css",
  },
  outdir: ASSETS,
  entryNames: "[name]-[hash]",
  chunkNames: "chunk-[hash]",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "browser",
  // Browsers of the last few years (module scripts, top-level await, CSS color-mix).
  target: ["chrome111", "firefox113", "safari16.4"],
  minify: true,
  sourcemap: "linked",
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
});

const outputs = result.metafile.outputs;
const urlOf = (path) => `${ASSETS_URL}/${basename(path)}`;
const entryOutput = (name) => {
  const found = Object.entries(outputs).find(([path, output]) => output.entryPoint?.endsWith(name) && !path.endsWith(".map"));
  if (!found) throw new Error(`esbuild produced no output for ${name}`);
  return found[0];
};
/** An output and every chunk it imports, transitively. */
const closure = (path, seen = new Set()) => {
  if (seen.has(path)) return seen;
  seen.add(path);
  for (const imported of outputs[path]?.imports ?? []) if (imported.kind === "import-statement") closure(imported.path, seen);
  return seen;
};

const css = entryOutput("web/src/console.css");
const names = {
  "console.css": urlOf(css),
  "playground.js": urlOf(entryOutput("web/src/playground.ts")),
  "inspector.js": urlOf(entryOutput("web/src/inspector.ts")),
};
for (const { page } of PAGES) {
  const template = readFileSync(join(HERE, "web", "pages", page), "utf8");
  const html = template.replace(/\{\{([a-z.]+)\}\}/g, (match, name) => {
    if (!(name in names)) throw new Error(`${page}: unknown placeholder ${match}`);
    return names[name];
  });
  writeFileSync(join(OUT, page), html);
}

const files = {};
const compress = (path) => {
  const bytes = readFileSync(path);
  const gzip = gzipSync(bytes, { level: 9 });
  const brotli = brotliCompressSync(bytes, { params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length } });
  writeFileSync(`${path}.gz`, gzip);
  writeFileSync(`${path}.br`, brotli);
  files[relative(OUT, path)] = { bytes: bytes.length, gzip: gzip.length, brotli: brotli.length };
};
for (const path of Object.keys(outputs)) compress(join(HERE, path));
for (const { page } of PAGES) compress(join(OUT, page));

const pages = {};
let overBudget = false;
for (const { page, entry } of PAGES) {
  const loaded = [page, ...[...closure(entryOutput(`web/src/${entry}.ts`))].map((path) => relative(OUT, join(HERE, path))), relative(OUT, join(HERE, css))];
  const total = loaded.reduce((sum, path) => ({ bytes: sum.bytes + files[path].bytes, gzip: sum.gzip + files[path].gzip }), { bytes: 0, gzip: 0 });
  pages[page] = { files: loaded, ...total };
  process.stderr.write(`[console] ${page}: ${(total.bytes / 1024).toFixed(1)} KiB, ${(total.gzip / 1024).toFixed(1)} KiB gzipped (${loaded.length} files)\n`);
  if (total.gzip > BUDGET_GZIP_BYTES) overBudget = true;
}
writeFileSync(join(OUT, "manifest.json"), `${JSON.stringify({ assetsUrl: ASSETS_URL, files, pages }, null, 2)}\n`);
if (overBudget) {
  process.stderr.write(`[console] a page is over its budget of ${BUDGET_GZIP_BYTES / 1024} KiB gzipped\n`);
  process.exit(1);
}
