/**
 * CPU and memory readings of processes from /proc (Linux only): utime+stime
 * from /proc/<pid>/stat, VmRSS from /proc/<pid>/status.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) may contain spaces; fields after it start past the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks();
}

/** Resident set size in kilobytes. */
export function rssKb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  return match ? Number(match[1]) : Number.NaN;
}

/** A named process whose CPU the benchmark follows. */
export interface Watched {
  readonly name: string;
  readonly pid: number;
}

/** CPU used by each watched process over a window. */
export interface CpuWindow {
  readonly wallSeconds: number;
  /** CPU seconds per process. */
  readonly cpuSeconds: Record<string, number>;
  /** CPU seconds / wall seconds: how many cores the process kept busy. */
  readonly cores: Record<string, number>;
}

/** Starts a CPU window over `processes`; call the result to close it. */
export function cpuWindow(processes: readonly Watched[]): () => CpuWindow {
  const start = performance.now();
  const before = new Map(processes.map((p) => [p.name, cpuSeconds(p.pid)]));
  return () => {
    const wallSeconds = (performance.now() - start) / 1000;
    const used: Record<string, number> = {};
    const cores: Record<string, number> = {};
    for (const p of processes) {
      const seconds = cpuSeconds(p.pid) - (before.get(p.name) ?? 0);
      used[p.name] = Math.round(seconds * 1000) / 1000;
      cores[p.name] = Math.round((seconds / wallSeconds) * 1000) / 1000;
    }
    return { wallSeconds: Math.round(wallSeconds * 1000) / 1000, cpuSeconds: used, cores };
  };
}
