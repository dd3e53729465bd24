/**
 * The playground (`/`): pick a model, type a prompt, and watch the answer
 * stream over the transport of your choice, with the figures measured here
 * in the browser. Stop cancels the stream; Drop connection closes the
 * transport and resumes after the last event, and the counters show that
 * nothing was lost or repeated. Only the public API of docs/api.md is used.
 */
import { storedKey, storeKey } from "./credentials.js";
import { byId, h, replace, svg } from "./dom.js";
import { TIMELINE_GAPS } from "./figures.js";
import { count, ms, rate } from "./format.js";
import { StreamSession } from "./session.js";
import { TRANSPORTS, transportById } from "./transports/index.js";
import { authHeaders } from "./transports/types.js";

const base = window.location.origin;
const elements = {
  keyPanel: byId<HTMLElement>("key-panel"),
  keyInput: byId<HTMLInputElement>("key"),
  keyForm: byId<HTMLFormElement>("key-form"),
  keyForget: byId<HTMLButtonElement>("key-forget"),
  keyNote: byId<HTMLElement>("key-note"),
  form: byId<HTMLFormElement>("ask"),
  model: byId<HTMLSelectElement>("model"),
  transports: byId<HTMLElement>("transports"),
  transportNote: byId<HTMLElement>("transport-note"),
  prompt: byId<HTMLTextAreaElement>("prompt"),
  send: byId<HTMLButtonElement>("send"),
  stop: byId<HTMLButtonElement>("stop"),
  drop: byId<HTMLButtonElement>("drop"),
  answer: byId<HTMLElement>("answer"),
  status: byId<HTMLElement>("status"),
  timeline: byId<HTMLElement>("timeline"),
  timelineNote: byId<HTMLElement>("timeline-note"),
};

let session: StreamSession | undefined;
let renderQueued = false;

function figure(name: string, value: string): void {
  const element = document.querySelector(`[data-figure="${name}"]`);
  if (element) element.textContent = value;
}

function selectedTransport() {
  const checked = elements.transports.querySelector<HTMLInputElement>("input[name=transport]:checked");
  return transportById(checked?.value ?? "sse") ?? TRANSPORTS[0];
}

function renderTransports(): void {
  const choices = TRANSPORTS.map((transport) =>
    h(
      "label",
      { class: transport.available ? "choice" : "choice disabled", title: transport.note },
      h("input", {
        type: "radio",
        name: "transport",
        value: transport.id,
        checked: transport.id === "sse",
        disabled: !transport.available,
        onchange: () => {
          elements.transportNote.textContent = transport.note;
        },
      }),
      transport.label,
      transport.available ? null : h("small", {}, " (not served yet)"),
    ),
  );
  replace(elements.transports, h("legend", {}, "Transport"), ...choices);
  elements.transportNote.textContent = TRANSPORTS[0]?.note ?? "";
}

async function loadModels(): Promise<void> {
  const key = storedKey("runnel.apiKey");
  const response = await fetch(`${base}/v1/models`, { headers: authHeaders(key) });
  if (response.status === 401) {
    elements.keyPanel.hidden = false;
    elements.keyNote.textContent = key ? "That key was refused: enter another." : "This gateway needs an API key.";
    replace(elements.model, h("option", { value: "" }, "(enter an API key)"));
    elements.send.disabled = true;
    return;
  }
  if (!response.ok) {
    elements.status.textContent = `GET /v1/models answered ${response.status}`;
    return;
  }
  const body = (await response.json()) as { data?: { id: string }[] };
  const names = (body.data ?? []).map((model) => model.id);
  elements.keyPanel.hidden = key === undefined;
  elements.keyNote.textContent = key ? "Using the key kept in this tab's session storage." : "";
  elements.keyForget.hidden = key === undefined;
  const previous = elements.model.value;
  replace(elements.model, ...names.map((name) => h("option", { value: name, selected: name === previous }, name)));
  elements.send.disabled = names.length === 0;
}

function scheduleRender(): void {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render(): void {
  const current = session;
  if (!current) return;
  const now = performance.now();
  const { figures, ledger } = current;
  // The answer: one element per segment, updated in place (a long answer is not rebuilt per token).
  const segments = current.answer.segments;
  const nodes = elements.answer.children;
  for (let index = 0; index < segments.length; index += 1) {
    const segment = segments[index];
    if (!segment) continue;
    const className = segment.kind === "text" ? (segment.discarded ? "text discarded" : "text") : `marker ${segment.tone}`;
    let node = nodes[index] as HTMLElement | undefined;
    if (!node || node.classList.contains("caret")) {
      node = h("span", {});
      elements.answer.insertBefore(node, nodes[index] ?? null);
    }
    if (node.className !== className) node.className = className;
    if (segment.kind === "marker") node.dataset.marker = segment.tone;
    if (node.textContent !== segment.text) node.textContent = segment.text;
  }
  while (nodes.length > segments.length) nodes[nodes.length - 1]?.remove();
  if (!current.ended) elements.answer.append(h("span", { class: "caret", "aria-hidden": "true" }));

  const statusText =
    current.status === "done"
      ? `done (${current.finishReason ?? "finished"})`
      : current.status === "error"
        ? `error ${current.error?.code ?? ""}: ${current.error?.message ?? ""}`
        : current.cancelling && current.status !== "cancelled"
          ? "cancelling…"
          : current.status;
  elements.status.textContent = statusText;
  elements.status.dataset.status = current.status;
  figure("status", current.status);
  figure("ttft", ms(figures.ttftMs));
  figure("rate-rolling", rate(figures.firstTokenAt === undefined ? undefined : figures.rollingRate(now)));
  figure("rate-overall", rate(figures.overallRate));
  figure("total", ms(figures.totalMs(now)));
  figure("tokens", count(figures.tokens));
  figure("usage", current.usage ? `${current.usage.prompt_tokens} in, ${current.usage.completion_tokens} out` : "—");
  figure("events", count(ledger.received));
  figure("resumed-from", ledger.resumes.length === 0 ? "—" : ledger.resumes.join(", "));
  figure("duplicates", count(ledger.duplicates));
  figure("gaps", count(ledger.gaps));
  figure("stream-id", current.stream?.streamId ?? "—");
  figure("route", current.route ?? "—");
  figure("transport", current.carriedBy.map((id) => transportById(id)?.label ?? id).join(" → "));
  figure("finish", current.finishReason ?? "—");
  renderTimeline(figures.gaps);
  elements.stop.disabled = !current.stream || current.ended || current.cancelling;
  elements.drop.disabled = !current.stream || current.ended || current.status === "resuming";
  elements.send.disabled = !current.ended;
}

/** The inter-token timeline: one bar per token, its height the gap before it (the first token's bar, the time to first token, is left out). */
function renderTimeline(gaps: readonly number[]): void {
  const width = 600;
  const height = 60;
  const inter = gaps.slice(1);
  const highest = Math.max(1, ...inter);
  // At least 60 slots, so a short answer does not get a few very wide bars.
  const barWidth = width / Math.min(TIMELINE_GAPS, Math.max(60, inter.length));
  const bars = inter.map((gap, index) => {
    const barHeight = Math.max(1, (gap / highest) * height);
    return svg("rect", {
      x: (index * barWidth).toFixed(2),
      y: (height - barHeight).toFixed(2),
      width: Math.max(0.5, barWidth * 0.8).toFixed(2),
      height: barHeight.toFixed(2),
    });
  });
  elements.timelineNote.textContent =
    inter.length === 0
      ? "Inter-token timeline: one bar per token, as high as the gap before it."
      : `Inter-token timeline: ${inter.length} gaps, the highest ${ms(highest)}.`;
  replace(
    elements.timeline,
    svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": "the gap before each token" }, ...bars),
  );
}

function send(event: Event): void {
  event.preventDefault();
  if (session && !session.ended) return;
  const transport = selectedTransport();
  if (!transport?.available) return;
  const model = elements.model.value;
  const prompt = elements.prompt.value.trim() || "Tell me about rivers.";
  replace(elements.answer);
  session = new StreamSession({
    transport,
    body: { model, messages: [{ role: "user", content: prompt }] },
    base,
    key: storedKey("runnel.apiKey"),
    onChange: scheduleRender,
  });
  session.start();
  render();
}

function main(): void {
  renderTransports();
  elements.form.addEventListener("submit", send);
  elements.stop.addEventListener("click", () => {
    void session?.stop();
  });
  elements.drop.addEventListener("click", () => session?.drop());
  elements.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    storeKey("runnel.apiKey", elements.keyInput.value.trim() || undefined);
    elements.keyInput.value = "";
    void loadModels();
  });
  elements.keyForget.addEventListener("click", () => {
    storeKey("runnel.apiKey", undefined);
    void loadModels();
  });
  // Figures that move with the clock (total time, the rolling rate) while a stream runs.
  setInterval(() => {
    if (session && !session.ended) scheduleRender();
  }, 100);
  void loadModels();
}

main();
