/**
 * Keeps a running count per message key in the stage's key-value store
 * and outputs it, exactly as the Rust `count-by-key` does.
 *
 * Each message with a key `k` outputs one record: key `k`, value the count
 * of messages with that key so far, as decimal text. The entry under
 * `count:k` (`count-hex:` and the key in hex when it is not UTF-8) holds
 * `<count> <partition> <offset>`: the count and the message that last
 * raised it, so a message delivered again (after a crash, before its
 * offset was committed) outputs the stored count instead of counting twice.
 *
 * A message without a key is dead-lettered; a store failure is retried; a
 * bucket the stage does not grant is dead-lettered, naming it. Plugin
 * config: `bucket` (default `default`).
 */

import { Output, Utf8Error, batchOf, config, deadLetter, decodeUtf8, retry, success } from 'sluice-plugin';
import { StoreError, keyvalue } from 'sluice-plugin/keyvalue';

function entryKey(key) {
  try {
    return `count:${decodeUtf8(key)}`;
  } catch (error) {
    if (!(error instanceof Utf8Error)) throw error;
    return `count-hex:${Array.from(key, (byte) => byte.toString(16).padStart(2, '0')).join('')}`;
  }
}

/** `{ count, partition, offset }`, or `undefined` for anything else. */
function parseEntry(stored) {
  let fields;
  try {
    fields = decodeUtf8(stored).split(' ');
  } catch {
    return undefined;
  }
  if (fields.length !== 3 || !fields.every((field) => /^-?[0-9]+$/.test(field))) return undefined;
  return { count: BigInt(fields[0]), partition: Number(fields[1]), offset: BigInt(fields[2]) };
}

function count(bucketName, key, message) {
  const bucket = keyvalue.open(bucketName);
  const name = entryKey(key);
  const stored = bucket.get(name);
  const entry = stored === undefined ? undefined : parseEntry(stored);
  if (entry !== undefined && entry.partition === message.partition && entry.offset >= message.offset) {
    return entry.count;
  }
  const total = (entry === undefined ? 0n : entry.count) + 1n;
  bucket.set(name, `${total} ${message.partition} ${message.offset}`);
  return total;
}

export function handle(message) {
  if (message.key === undefined) return deadLetter('count-by-key: the message has no key to count it under');
  const bucketName = config.getOr('bucket', 'default');
  let total;
  try {
    total = count(bucketName, message.key, message);
  } catch (error) {
    if (!(error instanceof StoreError)) throw error;
    if (error.kind === 'other') return retry(`count-by-key: the store failed: ${error.reason}`);
    return deadLetter(`count-by-key: the stage does not grant bucket \`${bucketName}\``);
  }
  return success([Output.replacingValue(message, `${total}`)]);
}

export const handleBatch = batchOf(handle);
