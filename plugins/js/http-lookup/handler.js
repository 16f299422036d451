/**
 * Looks each message up in an HTTP service and outputs the answer, exactly
 * as the Rust `http-lookup` does, with the platform's own `fetch`.
 *
 * Plugin config: `lookup-url`, where each message's value is POSTed. The
 * answer decides the verdict:
 * - 2xx: success, the response body replaces the value;
 * - 429 or 5xx, or no answer: retry, after the server's `Retry-After` (in
 *   seconds) when it sends one;
 * - any other status: dead-letter, since the same request gets the same
 *   answer.
 *
 * The handler is async: sluice calls a plugin that calls out one message
 * at a time and waits for its verdict.
 */

import { Output, config, deadLetter, retry, success } from 'sluice-plugin';

export async function handle(message) {
  const url = config.get('lookup-url');
  if (url === undefined) return deadLetter('http-lookup: set `lookup-url` under [plugin.config]');
  let response;
  let body;
  try {
    response = await fetch(url, { method: 'POST', body: message.value ?? new Uint8Array() });
    body = new Uint8Array(await response.arrayBuffer());
  } catch (error) {
    return retry(`lookup failed: ${error.message}`);
  }
  if (response.ok) return success([Output.replacingValue(message, body)]);
  const reason = `lookup answered ${response.status} ${response.statusText}`;
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
