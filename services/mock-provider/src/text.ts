/**
 * Deterministic mock text. The same (count, seed) always gives the same
 * tokens, so a test can compare what a client received with `mockText`.
 */

/** Number of tokens a completion has when the scenario names none. */
export const DEFAULT_TOKENS = 32;

/** Seed of the word generator when the scenario names none. */
export const DEFAULT_SEED = 0;

const WORDS: readonly string[] = [
  ..."the river carries tokens down to a quiet sea while stones hum under cold water and light falls on every".split(" "),
  ..."small wave that moves past old mills bridges reeds banks swift slow bright dark green grey stream current flows runs".split(" "),
  ..."morning evening wind rain clouds sun moon stars field stone gateway message signal answer question story line word page voice".split(" "),
];

/** mulberry32: a tiny, fast, seeded 32-bit PRNG returning floats in [0, 1). */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Yields tokens without end: words picked by a PRNG seeded with `seed`. The
 * first has no leading space, every later one starts with a space.
 */
export function* tokenGenerator(seed: number): Generator<string, never, undefined> {
  const random = mulberry32(seed);
  let first = true;
  for (;;) {
    const word = WORDS[Math.floor(random() * WORDS.length)] ?? "the";
    yield first ? word : ` ${word}`;
    first = false;
  }
}

/** The first `count` tokens for `seed` (an empty list when count ≤ 0). */
export function mockTokens(count: number, seed: number = DEFAULT_SEED): string[] {
  const tokens: string[] = [];
  const generator = tokenGenerator(seed);
  while (tokens.length < count) tokens.push(generator.next().value);
  return tokens;
}

/** The text of the first `count` tokens for `seed`: `mockTokens(count, seed).join("")`. */
export function mockText(count: number = DEFAULT_TOKENS, seed: number = DEFAULT_SEED): string {
  return mockTokens(count, seed).join("");
}
