/**
 * Adds fields to JSON objects and routes each one to the topic it names.
 *
 * The JavaScript twin of `plugins/rust/json-enrich`: the same input and
 * config give the same bytes out, reasons included.
 *
 * Plugin config:
 * - `add.<field> = <value>`: set `<field>` to `<value>` on every object. The
 *   value is parsed as JSON when it parses (`add.version = 3` is a number),
 *   and is a string otherwise (`add.env = prod`).
 * - `route-field` (default `route`): the field whose string value names the
 *   output topic. Without it the record goes to the stage's output topic.
 *
 * A value that is not a JSON object is dead-lettered: no number of retries
 * will make it valid. The reason names the problem in words all three
 * languages share; the parser's own message goes to the debug log.
 */

import { Output, Utf8Error, batchOf, config, deadLetter, decodeUtf8, json, log, success } from 'sluice-plugin';

const { JsonError, kind, parse, stringify } = json;

export function handle(message) {
  if (message.value == null) return deadLetter('invalid JSON: the record is a tombstone (no value)');
  let text;
  try {
    text = decodeUtf8(message.value);
  } catch (error) {
    if (error instanceof Utf8Error) return deadLetter(`invalid JSON: the value is not UTF-8: ${error.message}`);
    throw error;
  }
  let document;
  try {
    document = parse(text);
  } catch (error) {
    if (!(error instanceof JsonError)) throw error;
    log.debug(`offset ${message.offset}: ${error.message}`);
    return deadLetter('invalid JSON: the value is not well-formed JSON');
  }
  if (!(document instanceof Map)) return deadLetter(`invalid JSON: expected an object, got ${kind(document)}`);
  addConfiguredFields(document);
  const routeField = config.getOr('route-field', 'route');
  const topic = document.get(routeField) ?? null;
  if (topic !== null && !(typeof topic === 'string' && topic !== '')) {
    return deadLetter(
      `invalid JSON: field \`${routeField}\` must be a non-empty string naming a topic, got ${stringify(topic)}`,
    );
  }
  const output = Output.replacingValue(message, stringify(document));
  return success([topic === null ? output : output.toTopic(topic)]);
}

export const handleBatch = batchOf(handle);

function addConfiguredFields(document) {
  for (const [key, text] of config.entries()) {
    if (!key.startsWith('add.')) continue;
    let value;
    try {
      value = parse(text);
    } catch (error) {
      if (!(error instanceof JsonError)) throw error;
      value = text;
    }
    document.set(key.slice('add.'.length), value);
  }
}
