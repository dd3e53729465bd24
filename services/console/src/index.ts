/** @runnel/console: the web console's assets, the Fastify plugin that serves them, and the inspector API's shapes. */
export * from "./protocol.js";
export {
  ASSET_CACHE_CONTROL,
  type ConsoleAssets,
  type ConsoleOptions,
  contentSecurityPolicy,
  DEFAULT_ASSETS_DIR,
  PAGE_CACHE_CONTROL,
  registerConsole,
} from "./serve.js";
