/**
 * Throws when the value equals the marker (config `marker`, default `TRAP`);
 * passes every other message through. Proves the host turns an uncaught
 * JavaScript exception into a failed attempt whose reason quotes the error,
 * and recovers on a fresh instance.
 */

import { Output, batchOf, config, decodeUtf8, success } from 'sluice-plugin';

export function handle(message) {
  const marker = config.getOr('marker', 'TRAP');
  if (message.value != null && isMarker(message.value, marker)) {
    throw new Error(`found the marker value ${JSON.stringify(marker)}`);
  }
  return success([Output.fromMessage(message)]);
}

export const handleBatch = batchOf(handle);

function isMarker(value, marker) {
  try {
    return decodeUtf8(value) === marker;
  } catch {
    return false;
  }
}
