/**
 * Uses every SDK helper, chosen by the message value; the JavaScript twin of
 * `plugins/rust/testing/sdk-tour`, whose doc lists the commands. The tests
 * hold the two (and the Python one) to the same output byte for byte.
 */

import {
  Output,
  Utf8Error,
  batchOf,
  config,
  deadLetter,
  filter,
  headerText,
  keyText,
  log,
  retry,
  success,
  valueText,
} from 'sluice-plugin';

export function handle(message) {
  let command;
  try {
    command = valueText(message);
  } catch (error) {
    if (!(error instanceof Utf8Error)) throw error;
  }
  if (command === undefined) return success([Output.fromMessage(message)]);
  log.info(`sdk-tour: ${command}`);
  switch (command) {
    case 'filter':
      return filter();
    case 'retry':
      return retry('asked to retry');
    case 'retry-later':
      return retry('asked to retry later', { delayMs: 250 });
    case 'dead-letter':
      return deadLetter('asked to dead-letter');
    case 'build':
      return success([
        Output.of('built').toTopic('elsewhere').withKey('k-1').withHeader('h', 'v').withHeader('h', new Uint8Array([0xff])),
      ]);
    case 'header':
      return success([Output.of(headerText(message, 'trace') ?? 'no trace header')]);
    case 'key':
      return success([Output.of(describeKey(message))]);
    case 'config': {
      const settings = config.entries().map(([key, value]) => `${key}=${value}`).join(',');
      return success([Output.of(`${config.getOr('greeting', 'no greeting')}; ${settings}`)]);
    }
    default:
      return success([Output.fromMessage(message)]);
  }
}

export const handleBatch = batchOf(handle);

function describeKey(message) {
  try {
    return keyText(message) ?? 'no key';
  } catch (error) {
    if (error instanceof Utf8Error) return 'key is not text';
    throw error;
  }
}
