/** @runnel/mock-provider: an OpenAI-compatible mock LLM server with deterministic text and failure injection. */
export { buildMockProvider, type LogLine, MAX_BODY_BYTES, type MockProvider, type MockProviderOptions } from "./app.js";
export { LOG_LEVELS, type LogLevel, loadMockConfig, type MockConfig, MockConfigError } from "./config.js";
export { JOURNAL_LIMIT, JOURNAL_TEXT_LIMIT, Journal, type JournalEntry } from "./journal.js";
export {
  DEFAULT_AFTER,
  DEFAULT_RETRY_AFTER_SECONDS,
  FAIL_MODES,
  type FailMode,
  parseScenario,
  type Scenario,
  type ScenarioDefaults,
  ScenarioError,
} from "./scenario.js";
export { DEFAULT_SEED, DEFAULT_TOKENS, mockText, mockTokens } from "./text.js";
