/**
 * The answer as the page shows it: text, with visible markers where the
 * stream announced something (a failover, a takeover, a restart of the
 * ingress, a resume). A `restart` failover discards what came before it
 * (docs/api.md, "Failover announcements"): that text stays on the page,
 * struck through, and is not part of the answer. Pure.
 */

export type MarkerTone = "failover" | "restart" | "resume" | "end";

export type Segment =
  | { readonly kind: "text"; text: string; discarded: boolean }
  | { readonly kind: "marker"; readonly tone: MarkerTone; readonly text: string };

export class Answer {
  readonly segments: Segment[] = [];

  append(text: string): void {
    if (text === "") return;
    const last = this.segments.at(-1);
    if (last?.kind === "text" && !last.discarded) last.text += text;
    else this.segments.push({ kind: "text", text, discarded: false });
  }

  marker(tone: MarkerTone, text: string): void {
    this.segments.push({ kind: "marker", tone, text });
  }

  /** Everything received so far is not part of the answer any more (a `restart` failover). */
  discardSoFar(): void {
    for (const segment of this.segments) if (segment.kind === "text") segment.discarded = true;
  }

  /** The answer: every text that was not discarded, markers left out. */
  get text(): string {
    return this.segments.map((segment) => (segment.kind === "text" && !segment.discarded ? segment.text : "")).join("");
  }

  get markers(): number {
    return this.segments.filter((segment) => segment.kind === "marker").length;
  }
}
