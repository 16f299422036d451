/**
 * POSTs each message to a webhook with an idempotency key, exactly as the
 * Rust `webhook` does: the shape of a mailer, a notifier or any side effect
 * that must happen once.
 *
 * Delivery is at-least-once, so each request carries an `Idempotency-Key`
 * that is the same every time the same message is handled: the value of the
 * header named by `idempotency-header` when the message has it, otherwise
 * the message's coordinates `<topic>/<partition>/<offset>`.
 *
 * Plugin config: `webhook-url`; `idempotency-header` (optional). Success
 * only on 2xx, passing the message through; 408, 429 and 5xx, or no
 * answer: retry (after `Retry-After` when sent); any other status:
 * dead-letter.
 */

import { Output, config, deadLetter, header, retry, success } from 'sluice-plugin';

function idempotencyKey(message) {
  const name = config.get('idempotency-header');
  const value = name === undefined ? undefined : header(message, name);
  return value ?? new TextEncoder().encode(`${message.topic}/${message.partition}/${message.offset}`);
}

export async function handle(message) {
  const url = config.get('webhook-url');
  if (url === undefined) return deadLetter('webhook: set `webhook-url` under [plugin.config]');
  let response;
  try {
    const headers = new Headers();
    headers.set('idempotency-key', new TextDecoder().decode(idempotencyKey(message)));
    headers.set('content-type', 'application/octet-stream');
    response = await fetch(url, { method: 'POST', headers, body: message.value ?? new Uint8Array() });
    await response.arrayBuffer();
  } catch (error) {
    return retry(`webhook failed: ${error.message}`);
  }
  if (response.ok) return success([Output.fromMessage(message)]);
  const reason = `webhook answered ${response.status} ${response.statusText}`;
  if (response.status === 408 || response.status === 429 || response.status >= 500) {
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
