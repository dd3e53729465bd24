/**
 * The traffic inspector (`/console/streams`): every stream in flight across
 * the cluster, fed live by the ingress (an SSE feed read with `fetch`, so
 * the admin key travels in a header, never in the URL), each route's
 * health, and for one stream its timeline, its trace as a waterfall, and a
 * cancel button. See the CONSOLE_API contract in @runnel/console.
 */
import type { FeedHello, FeedRoutes, FeedStreams, InspectorStatus, StreamDetail, StreamRow, StreamTrace } from "@runnel/console";
import { storedKey, storeKey } from "./credentials.js";
import { byId, h, replace } from "./dom.js";
import { count, ms, rate, shortId } from "./format.js";
import { SseParser } from "./sse-parser.js";
import { StreamList } from "./stream-list.js";
import { authHeaders } from "./transports/types.js";
import { layoutWaterfall } from "./waterfall.js";

const API = "/console/api";
const elements = {
  feedStatus: byId<HTMLElement>("feed-status"),
  adminPanel: byId<HTMLElement>("admin-panel"),
  adminForm: byId<HTMLFormElement>("admin-form"),
  adminKey: byId<HTMLInputElement>("admin-key"),
  adminNote: byId<HTMLElement>("admin-note"),
  disabledPanel: byId<HTMLElement>("disabled-panel"),
  disabledReason: byId<HTMLElement>("disabled-reason"),
  live: byId<HTMLElement>("live"),
  streamCount: byId<HTMLElement>("stream-count"),
  rows: byId<HTMLElement>("stream-rows"),
  routesPanel: byId<HTMLElement>("routes-panel"),
  routesNote: byId<HTMLElement>("routes-note"),
  routeRows: byId<HTMLElement>("route-rows"),
  detail: byId<HTMLElement>("detail"),
  detailId: byId<HTMLElement>("detail-id"),
  detailCancel: byId<HTMLButtonElement>("detail-cancel"),
  detailClose: byId<HTMLButtonElement>("detail-close"),
  detailTrace: byId<HTMLElement>("detail-trace"),
  detailState: byId<HTMLElement>("detail-state"),
  detailOwner: byId<HTMLElement>("detail-owner"),
  detailTimeline: byId<HTMLElement>("detail-timeline"),
  waterfall: byId<HTMLElement>("waterfall"),
  waterfallNote: byId<HTMLElement>("waterfall-note"),
};

const streams = new StreamList();
let status: InspectorStatus | undefined;
let selected: string | undefined;
let trace: StreamTrace | undefined;
let feedAbort: AbortController | undefined;

function key(): string | undefined {
  return status?.access === "admin-key" ? storedKey("runnel.adminKey") : undefined;
}

function setFeedState(state: string, text: string): void {
  elements.feedStatus.dataset.state = state;
  elements.feedStatus.textContent = text;
}

async function api<T>(path: string, init: RequestInit = {}): Promise<{ status: number; body: T | undefined; message: string }> {
  const response = await fetch(`${API}${path}`, { ...init, headers: { ...authHeaders(key()), ...(init.headers ?? {}) } });
  const text = await response.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  const message = (body as { error?: { message?: string } } | undefined)?.error?.message ?? response.statusText;
  return { status: response.status, body: response.ok ? (body as T) : undefined, message };
}

function askForKey(note: string): void {
  elements.adminPanel.hidden = false;
  elements.adminNote.textContent = note;
  elements.live.hidden = true;
  elements.routesPanel.hidden = true;
  setFeedState("key", "needs an admin key");
}

async function start(): Promise<void> {
  const answer = await api<InspectorStatus>("/status");
  status = answer.body;
  if (!status || status.inspector === "disabled") {
    elements.disabledPanel.hidden = false;
    elements.disabledReason.textContent = status?.reason ?? `GET ${API}/status answered ${answer.status}`;
    setFeedState("disabled", "disabled");
    return;
  }
  if (status.access === "admin-key" && !storedKey("runnel.adminKey")) {
    askForKey(status.reason);
    return;
  }
  void follow();
}

/** Reads the live feed until it ends, then comes back (the feed is one long response). */
async function follow(): Promise<void> {
  feedAbort?.abort();
  const controller = new AbortController();
  feedAbort = controller;
  setFeedState("connecting", "connecting…");
  let response: Response;
  try {
    response = await fetch(`${API}/feed`, { headers: { accept: "text/event-stream", ...authHeaders(key()) }, signal: controller.signal });
  } catch {
    if (!controller.signal.aborted) setTimeout(() => void follow(), 1_000);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    const body = (await response.json().catch(() => undefined)) as { error?: { message?: string } } | undefined;
    askForKey(body?.error?.message ?? "That key was refused.");
    return;
  }
  if (!response.ok || !response.body) {
    setFeedState("error", `feed answered ${response.status}; retrying`);
    setTimeout(() => void follow(), 2_000);
    return;
  }
  elements.adminPanel.hidden = true;
  elements.live.hidden = false;
  elements.routesPanel.hidden = false;
  setFeedState("live", "live");
  const parser = new SseParser();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const event of parser.push(decoder.decode(value, { stream: true }))) onFeed(event.event ?? "message", event.data);
    }
  } catch {
    // The connection broke: come back below.
  }
  if (controller.signal.aborted) return;
  setFeedState("connecting", "reconnecting…");
  setTimeout(() => void follow(), 1_000);
}

function onFeed(kind: string, data: string): void {
  if (!data) return;
  const message = JSON.parse(data) as unknown;
  if (kind === "hello") {
    const hello = message as FeedHello;
    elements.feedStatus.title = `served by ${hello.instance}; finished streams stay ${ms(hello.lingerMs)}`;
  } else if (kind === "streams") {
    streams.apply(message as FeedStreams, Date.now());
    renderStreams();
  } else if (kind === "routes") {
    renderRoutes(message as FeedRoutes);
  }
}

const COLUMNS = ["id", "key", "model", "route", "state", "age", "ttft", "tokens", "rate", "transport"] as const;

function cells(row: StreamRow, now: number): Record<(typeof COLUMNS)[number], string> {
  const ended = row.endedAtMs !== null;
  return {
    id: shortId(row.id),
    key: row.key || "—",
    model: row.model || "—",
    route: row.provider && row.route ? `${row.provider}/${row.route}` : row.provider || row.route || "—",
    state: ended ? row.outcome || row.phase : row.phase,
    age: ms(streams.ageMs(row, now)),
    ttft: row.ttftMs === null ? "—" : ms(row.ttftMs),
    tokens: `${row.partial ? "≈" : ""}${count(row.tokens)}`,
    rate: rate(row.rate),
    transport: row.transport,
  };
}

function renderStreams(): void {
  const now = Date.now();
  const ordered = streams.ordered();
  const live = ordered.filter((row) => row.endedAtMs === null).length;
  elements.streamCount.textContent = `${live} running, ${ordered.length - live} finished${streams.overflow ? `, ${streams.overflow} more not shown` : ""}`;
  const existing = new Map<string, HTMLTableRowElement>();
  for (const tr of elements.rows.querySelectorAll<HTMLTableRowElement>("tr[data-stream-id]")) existing.set(tr.dataset.streamId ?? "", tr);
  const wanted: HTMLTableRowElement[] = [];
  for (const row of ordered) {
    let tr = existing.get(row.id);
    if (!tr) {
      tr = h("tr", { "data-stream-id": row.id, tabindex: 0, title: row.id });
      for (const column of COLUMNS) tr.append(h("td", { "data-col": column, class: ["age", "ttft", "tokens", "rate"].includes(column) ? "num" : "" }));
      const id = row.id;
      tr.addEventListener("click", () => select(id));
      tr.addEventListener("keydown", (event) => {
        if (event.key === "Enter") select(id);
      });
    }
    existing.delete(row.id);
    const values = cells(row, now);
    for (const column of COLUMNS) {
      const td = tr.querySelector<HTMLElement>(`td[data-col="${column}"]`);
      if (td && td.textContent !== values[column]) {
        td.textContent = values[column];
        // Long outcomes and routes are cut in the cell: the whole text is its tooltip.
        if (column === "state" || column === "route") td.title = values[column];
      }
    }
    tr.dataset.phase = row.phase;
    tr.classList.toggle("ended", row.endedAtMs !== null);
    tr.classList.toggle("selected", row.id === selected);
    wanted.push(tr);
  }
  for (const stale of existing.values()) stale.remove();
  // Reorder only where needed, so a row being clicked is not replaced under the pointer.
  wanted.forEach((tr, index) => {
    if (elements.rows.children[index] !== tr) elements.rows.insertBefore(tr, elements.rows.children[index] ?? null);
  });
  if (selected) renderDetailState();
}

function renderRoutes(message: FeedRoutes): void {
  elements.routesNote.textContent = message.error
    ? `control plane did not answer: ${message.error}`
    : `${message.workers.length} worker${message.workers.length === 1 ? "" : "s"}, ${message.workers.reduce((sum, worker) => sum + worker.inFlight, 0)} streams in flight`;
  replace(
    elements.routeRows,
    ...message.routes.map((route) =>
      h(
        "tr",
        { "data-route": `${route.provider}/${route.model}`, "data-circuit": route.circuit },
        h("td", {}, route.provider),
        h("td", { class: "mono" }, route.model),
        h("td", { class: `circuit ${route.circuit}` }, route.circuit),
        h("td", {}, route.cooldownUntilMs > message.now ? `${ms(route.cooldownUntilMs - message.now)} left` : "—"),
        h("td", { class: "num" }, route.ttftMs > 0 ? ms(route.ttftMs) : "—"),
        h("td", { class: "num" }, count(route.inFlight)),
        h("td", { class: "num" }, `${(route.errorRate * 100).toFixed(route.errorRate > 0 && route.errorRate < 0.1 ? 1 : 0)} %`),
        h("td", { class: "num" }, count(route.requestsLastMinute)),
      ),
    ),
  );
}

let detailTimer: ReturnType<typeof setInterval> | undefined;

function select(id: string): void {
  selected = id;
  trace = undefined;
  elements.detail.hidden = false;
  elements.detailId.textContent = id;
  elements.detailTrace.textContent = "—";
  replace(elements.detailTimeline);
  replace(elements.waterfall);
  elements.waterfallNote.textContent = "";
  clearInterval(detailTimer);
  void refreshDetail();
  detailTimer = setInterval(() => void refreshDetail(), 1_000);
  renderStreams();
  elements.detail.scrollIntoView({ block: "nearest" });
}

function closeDetail(): void {
  selected = undefined;
  clearInterval(detailTimer);
  elements.detail.hidden = true;
  renderStreams();
}

function renderDetailState(): void {
  const row = selected ? streams.get(selected) : undefined;
  if (!row) return;
  elements.detailState.textContent = row.endedAtMs === null ? row.phase : row.outcome || row.phase;
  elements.detailOwner.textContent = row.owner || "—";
  elements.detailCancel.disabled = row.endedAtMs !== null;
}

async function refreshDetail(): Promise<void> {
  const id = selected;
  if (!id) return;
  const answer = await api<StreamDetail>(`/streams/${encodeURIComponent(id)}`);
  if (id !== selected) return;
  const detail = answer.body;
  if (detail) {
    replace(
      elements.detailTimeline,
      ...detail.timeline.map((entry) =>
        h(
          "li",
          { "data-kind": entry.kind },
          h("span", { class: "at mono" }, `+${ms(entry.atMs - detail.stream.createdAtMs)}`),
          h("span", { class: "kind" }, entry.kind.replace("_", " ")),
          h("span", {}, entry.text),
        ),
      ),
    );
    elements.detailState.textContent = detail.stream.endedAtMs === null ? detail.stream.phase : detail.stream.outcome || detail.stream.phase;
    elements.detailOwner.textContent = detail.stream.owner || "—";
    elements.detailCancel.disabled = detail.stream.endedAtMs !== null;
  }
  // Spans reach the backend when they end: a stream's trace is whole once the stream ended.
  const ended = detail?.stream.endedAtMs !== null && detail?.stream.endedAtMs !== undefined;
  if (!status?.traces) {
    elements.waterfallNote.textContent = "no trace backend configured (RUNNEL_TRACE_QUERY_URL)";
  } else if (!trace && ended) {
    await refreshTrace(id);
  } else if (!trace) {
    elements.waterfallNote.textContent = "drawn when the stream ends (spans are exported as they end)";
  }
  if (trace && detail?.stream.endedAtMs !== null) clearInterval(detailTimer);
}

async function refreshTrace(id: string): Promise<void> {
  const answer = await api<StreamTrace>(`/streams/${encodeURIComponent(id)}/trace`);
  if (id !== selected) return;
  const found = answer.body;
  if (!found || found.traceId === null) {
    elements.waterfallNote.textContent = found ? `${found.pending ?? "not in the trace backend yet"}; looking again…` : answer.message;
    return;
  }
  trace = found;
  const { link, traceId } = found;
  replace(elements.detailTrace, link ? h("a", { href: link, target: "_blank", rel: "noopener noreferrer" }, traceId) : traceId);
  renderWaterfall(found);
}

function renderWaterfall(found: StreamTrace): void {
  const waterfall = layoutWaterfall(found.spans);
  elements.waterfallNote.textContent = `${found.spans.length} spans over ${ms(waterfall.durationUs / 1_000)}: ${waterfall.services.join(", ")}`;
  const serviceClass = (service: string) => `service-${Math.max(0, waterfall.services.indexOf(service)) % 6}`;
  replace(
    elements.waterfall,
    ...waterfall.rows.map((row) => {
      const bar = h("span", { class: `bar ${serviceClass(row.span.service)}${row.span.error ? " error" : ""}` });
      // CSSOM, not a style attribute: the page's CSP allows no inline styles.
      bar.style.left = `${(row.offset * 100).toFixed(3)}%`;
      bar.style.width = `${(row.width * 100).toFixed(3)}%`;
      const label = h("span", { class: "label" }, h("span", { class: `service ${serviceClass(row.span.service)}` }, row.span.service), ` ${row.span.name}`);
      label.style.paddingLeft = `${row.depth * 12}px`;
      const details = Object.entries(row.span.attributes)
        .map(([name, value]) => `${name}=${value}`)
        .join("  ");
      return h(
        "div",
        { class: "span-row", "data-service": row.span.service, title: `${row.span.name} (${row.span.kind})\n${details}` },
        label,
        h("span", { class: "track" }, bar),
        h("span", { class: "duration num" }, ms(row.span.durationUs / 1_000)),
      );
    }),
  );
}

async function cancelSelected(): Promise<void> {
  const id = selected;
  if (!id) return;
  elements.detailCancel.disabled = true;
  const answer = await api<StreamDetail>(`/streams/${encodeURIComponent(id)}`, { method: "DELETE" });
  if (!answer.body) elements.detailState.textContent = `cancel failed: ${answer.message}`;
  void refreshDetail();
}

function main(): void {
  elements.adminForm.addEventListener("submit", (event) => {
    event.preventDefault();
    storeKey("runnel.adminKey", elements.adminKey.value.trim() || undefined);
    elements.adminKey.value = "";
    elements.adminPanel.hidden = true;
    void follow();
  });
  elements.detailCancel.addEventListener("click", () => void cancelSelected());
  elements.detailClose.addEventListener("click", closeDetail);
  // Ages climb between feed messages.
  setInterval(() => {
    if (streams.size > 0) renderStreams();
  }, 250);
  void start();
}

main();
