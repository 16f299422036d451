/**
 * The three verdicts a handler can return, named as in the Rust SDK and
 * shaped as jco expects the contract's `verdict` variant to be.
 */

/** Handled: produce these outputs, then commit. No outputs filters the message. */
export function success(outputs = []) {
  return { tag: 'success', val: [...outputs] };
}

/** Handled, with nothing to produce: the message is filtered out. */
export function filter() {
  return success([]);
}

/**
 * Try the same message again later. `delayMs` asks for a minimum wait
 * (capped by the stage's maximum backoff); without it the stage's backoff
 * policy decides. After the stage's maximum attempts the message is
 * dead-lettered with `retries exhausted: <reason>`.
 */
export function retry(reason, { delayMs } = {}) {
  return { tag: 'retry', val: { reason, delayMs: delayMs === undefined ? undefined : BigInt(delayMs) } };
}

/** Give up: send the original record to the dead-letter topic with this reason. */
export function deadLetter(reason) {
  return { tag: 'dead-letter', val: reason };
}
