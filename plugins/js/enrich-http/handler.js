/**
 * Looks one field of each JSON message up at an HTTP service and adds the
 * answer to the message, exactly as the Rust `enrich-http` does, with the
 * platform's own `fetch`: the same input, config and answers give the same
 * bytes out and the same reasons.
 *
 * Plugin config:
 * - `lookup-url`: the service. The field's value is appended as one
 *   percent-encoded path segment.
 * - `field` (default `id`): the member looked up, a string or a number.
 * - `into` (default `lookup`): the member the answer, which must be JSON,
 *   is stored under.
 *
 * The answer decides the verdict:
 * - 2xx: success, the message with the answer added;
 * - 429 or 5xx, or no answer: retry, after the server's `Retry-After` (in
 *   seconds) when it sends one;
 * - 404: dead-letter, naming the value that was not found;
 * - any other status, or an answer that is not JSON: dead-letter.
 *
 * The handler is async: sluice calls a plugin that calls out one message
 * at a time and waits for its verdict.
 */

import { Output, Utf8Error, config, deadLetter, decodeUtf8, json, log, retry, success } from 'sluice-plugin';

/** Why the message is dead-lettered before any request. */
class NotAnObject extends Error {}

export async function handle(message) {
  const base = config.get('lookup-url');
  if (base === undefined) return deadLetter('enrich-http: set `lookup-url` under [plugin.config]');
  const field = config.getOr('field', 'id');
  const into = config.getOr('into', 'lookup');
  let document;
  try {
    document = jsonObject(message);
  } catch (error) {
    if (error instanceof NotAnObject) return deadLetter(error.message);
    throw error;
  }
  if (!document.has(field)) return deadLetter(`enrich-http: field \`${field}\` is missing`);
  const value = document.get(field);
  let lookedUp;
  if (value instanceof json.JsonNumber) lookedUp = value.text;
  else if (typeof value === 'string') lookedUp = value;
  else {
    return deadLetter(
      `enrich-http: field \`${field}\` must be a string or a number to look up, got ${json.stringify(value)}`,
    );
  }
  const subject = `${field} ${json.stringify(value)}`;
  const url = `${base.replace(/\/+$/, '')}/${pathSegment(lookedUp)}`;
  let response;
  let body;
  try {
    response = await fetch(url);
    body = new Uint8Array(await response.arrayBuffer());
  } catch (error) {
    return retry(`lookup failed: ${error.message}`);
  }
  const status = `${response.status} ${response.statusText}`;
  if (response.ok) {
    let found;
    try {
      found = json.parse(decodeUtf8(body));
    } catch (error) {
      if (!(error instanceof json.JsonError || error instanceof Utf8Error)) throw error;
      return deadLetter(`lookup of ${subject} answered ${status} with a body that is not JSON`);
    }
    document.set(into, found);
    return success([Output.replacingValue(message, json.stringify(document))]);
  }
  if (response.status === 404) return deadLetter(`lookup of ${subject} found nothing (${status})`);
  const reason = `lookup of ${subject} answered ${status}`;
  if (response.status === 429 || response.status >= 500) {
    const retryAfter = (response.headers.get('retry-after') ?? '').trim();
    return /^[0-9]+$/.test(retryAfter) ? retry(reason, { delayMs: Number(retryAfter) * 1000 }) : retry(reason);
  }
  return deadLetter(reason);
}

/** One message after another: each waits for its own answer. */
export async function handleBatch(messages) {
  const verdicts = [];
  for (const message of messages) verdicts.push(await handle(message));
  return verdicts;
}

/** The message's value as a JSON object (a Map), in the words json-enrich uses. */
function jsonObject(message) {
  if (message.value == null) throw new NotAnObject('invalid JSON: the record is a tombstone (no value)');
  let text;
  try {
    text = decodeUtf8(message.value);
  } catch (error) {
    if (error instanceof Utf8Error) throw new NotAnObject(`invalid JSON: the value is not UTF-8: ${error.message}`);
    throw error;
  }
  let document;
  try {
    document = json.parse(text);
  } catch (error) {
    if (!(error instanceof json.JsonError)) throw error;
    log.debug(`offset ${message.offset}: ${error.message}`);
    throw new NotAnObject('invalid JSON: the value is not well-formed JSON');
  }
  if (!(document instanceof Map)) throw new NotAnObject(`invalid JSON: expected an object, got ${json.kind(document)}`);
  return document;
}

/** `text` as one path segment: everything but letters, digits and `-._~` percent-encoded, as Python's `quote` does. */
function pathSegment(text) {
  return encodeURIComponent(text).replace(/[!'()*]/g, (character) => `%${character.charCodeAt(0).toString(16).toUpperCase()}`);
}
