/**
 * Write sluice message handlers in JavaScript.
 *
 * A plugin is an ES module exporting `handle(message)`, which returns a
 * verdict, and `handleBatch(messages)`, built into a WebAssembly component
 * with `jco componentize`. This module gives handlers the shape of the Rust
 * SDK (`plugins/sdk`):
 *
 *     import { Output, Utf8Error, batchOf, deadLetter, success, valueText } from 'sluice-plugin';
 *
 *     export function handle(message) {
 *       let text;
 *       try {
 *         text = valueText(message);
 *       } catch (error) {
 *         if (error instanceof Utf8Error) return deadLetter(`value is not valid UTF-8: ${error.message}`);
 *         throw error;
 *       }
 *       if (text === undefined) return success([Output.fromMessage(message)]);
 *       return success([Output.replacingValue(message, text.toUpperCase())]);
 *     }
 *
 *     export const handleBatch = batchOf(handle);
 *
 * Export `handleBatch` always: every call into a JavaScript component has a
 * fixed cost, and a batch pays it once. `scripts/build-plugins` bundles each
 * `plugins/js/<name>/handler.js` with this module.
 */

export { config } from './config.js';
/** Byte-exact JSON, as serde_json writes it: `json.parse`, `json.stringify`. */
export * as json from './json-document.js';
export { log } from './log.js';
export { Output, header, headerText, keyText, valueText } from './records.js';
export { Utf8Error, decodeUtf8 } from './utf8.js';
export { deadLetter, filter, retry, success } from './verdicts.js';

/**
 * `handleBatch` for a `handle`: one verdict per message, in order. Write
 * your own only to share work across a batch.
 */
export function batchOf(handle) {
  return (messages) => messages.map((message) => handle(message));
}
