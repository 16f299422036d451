/**
 * Upper-cases each message's value, keeping its key and headers.
 *
 * A value that is not UTF-8 cannot be upper-cased, and retrying will not
 * change that, so it goes straight to the dead-letter topic. Tombstones pass
 * through untouched. Edit `handle` to make it yours.
 */

import { Output, Utf8Error, batchOf, deadLetter, success, valueText } from 'sluice-plugin';

export function handle(message) {
  let text;
  try {
    text = valueText(message);
  } catch (error) {
    if (error instanceof Utf8Error) return deadLetter(`value is not valid UTF-8: ${error.message}`);
    throw error;
  }
  if (text === undefined) return success([Output.fromMessage(message)]);
  return success([Output.replacingValue(message, text.toUpperCase())]);
}

export const handleBatch = batchOf(handle);
