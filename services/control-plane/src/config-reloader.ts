/**
 * Reloads runnel.yaml on SIGHUP and when the file changes, without dropping
 * anything: a valid new config becomes a new snapshot version pushed to every
 * watcher (streams in flight keep the routes they were given); an invalid one
 * is rejected with the validation message and the running config stays.
 *
 * The file is watched twice, because editors and Kubernetes replace it
 * rather than write it: the file itself (through its symlinks) and its
 * directory. A ConfigMap volume publishes an update by pointing the `..data`
 * symlink at a new directory (`runnel.yaml -> ..data/runnel.yaml`), which
 * the directory watch sees; the file watch is re-armed after every event, as
 * the file it followed may be gone. Events are debounced and a file whose
 * text did not change is not reloaded.
 */
import { type FSWatcher, readFileSync, watch } from "node:fs";
import { basename, dirname } from "node:path";
import { ConfigError, type RunnelConfig } from "@runnel/shared/contracts";
import type { Logger } from "@runnel/shared/runtime";
import type { SnapshotStore } from "./snapshot-store.js";

export type ReloadResult =
  | { readonly ok: true; readonly changed: boolean; readonly version: number; readonly trigger: string }
  | { readonly ok: false; readonly error: string; readonly version: number; readonly trigger: string };

export interface ConfigReloaderOptions {
  /** Reads and validates the config (throws ConfigError naming the field). */
  readonly load: () => Readonly<RunnelConfig>;
  readonly snapshots: SnapshotStore;
  readonly log: Logger;
  /** The file to watch (RUNNEL_CONFIG); without one only reload() reloads. */
  readonly path?: string;
  /** Quiet time after the last file event before reloading (default 250 ms). */
  readonly debounceMs?: number;
  /** Told about every reload, for tests and telemetry. */
  readonly onReload?: (result: ReloadResult) => void;
}

/** The sections of runnel.yaml read once at each service's start (not part of the routing snapshot). */
const STARTUP_SECTIONS = ["bus", "worker", "ingress"] as const;

function startupSections(config: Readonly<RunnelConfig>): string {
  const sections: unknown[] = STARTUP_SECTIONS.map((section) => config[section]);
  return JSON.stringify([...sections, config.auth?.resumeSecret ?? null]);
}

/** Which start-up sections differ between what the services run with and a new config. */
function changedStartupSections(running: string | undefined, next: Readonly<RunnelConfig>): string[] {
  if (running === undefined) return [];
  const before = JSON.parse(running) as unknown[];
  const names = [...STARTUP_SECTIONS, "auth.resumeSecret"];
  const after = JSON.parse(startupSections(next)) as unknown[];
  return names.filter((_name, index) => JSON.stringify(before[index]) !== JSON.stringify(after[index]));
}

export class ConfigReloader {
  readonly #options: ConfigReloaderOptions;
  #directoryWatcher: FSWatcher | undefined;
  #fileWatcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** The file's text as last reloaded (or at start), to skip events that changed nothing. */
  #lastText: string | undefined;
  /** The sections each service reads only at its start, as the running services read them. */
  #startupSections: string | undefined;
  #closed = false;

  constructor(options: ConfigReloaderOptions) {
    this.#options = options;
    this.#lastText = this.#read();
    try {
      this.#startupSections = startupSections(options.load());
    } catch {
      // An invalid file at start: the control plane would not have started; nothing to compare with.
    }
  }

  /** Loads the config now and, when valid, serves it. Never throws. */
  reload(trigger: string): ReloadResult {
    const { snapshots, log } = this.#options;
    this.#lastText = this.#read();
    let result: ReloadResult;
    try {
      const config = this.#options.load();
      const changed = snapshots.replace(config);
      result = { ok: true, changed, version: snapshots.current.version, trigger };
      const needRestart = changedStartupSections(this.#startupSections, config);
      log.info(
        { trigger, changed, routingVersion: snapshots.current.version },
        changed ? "config reloaded: providers, models and API keys are in force" : "config reloaded; providers, models and API keys unchanged",
      );
      if (needRestart.length > 0) {
        log.warn(
          { trigger, sections: needRestart },
          `config sections ${needRestart.join(", ")} changed: each service reads them at its start, so they take effect as the services restart`,
        );
      }
    } catch (error) {
      const message = error instanceof ConfigError ? error.message : error instanceof Error ? error.message : String(error);
      result = { ok: false, error: message, version: snapshots.current.version, trigger };
      log.error({ trigger, routingVersion: snapshots.current.version, err: message }, "config reload rejected; the running config stays");
    }
    this.#options.onReload?.(result);
    return result;
  }

  /** Starts watching the file and its directory. */
  watch(): void {
    const { path, log } = this.#options;
    if (!path || this.#closed) return;
    try {
      this.#directoryWatcher = watch(dirname(path), { persistent: false }, () => this.#schedule());
      this.#directoryWatcher.on("error", (error) => log.warn({ err: error, path }, "cannot watch the config directory; SIGHUP still reloads"));
    } catch (error) {
      log.warn({ err: error, path }, "cannot watch the config directory; SIGHUP still reloads");
    }
    this.#armFileWatch();
    log.info({ path }, "watching the config file for changes");
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#directoryWatcher?.close();
    this.#fileWatcher?.close();
  }

  #armFileWatch(): void {
    const { path } = this.#options;
    if (!path || this.#closed) return;
    this.#fileWatcher?.close();
    this.#fileWatcher = undefined;
    try {
      this.#fileWatcher = watch(path, { persistent: false }, () => this.#schedule());
      // The file was replaced or removed: the directory watch still sees what comes next.
      this.#fileWatcher.on("error", () => this.#schedule());
    } catch {
      // Not there right now (mid-replacement): the directory watch re-arms it.
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#armFileWatch();
      // Unchanged text (a touch, an unrelated file in the directory): nothing to do. A file
      // that cannot be read is a reload too: it is rejected with the reason, once.
      if (this.#read() === this.#lastText) return;
      this.reload(`file change (${basename(this.#options.path ?? "")})`);
    }, this.#options.debounceMs ?? 250);
    this.#timer.unref();
  }

  #read(): string | undefined {
    const { path } = this.#options;
    if (!path) return undefined;
    try {
      return readFileSync(path, "utf8");
    } catch {
      return undefined;
    }
  }
}
