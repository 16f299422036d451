/**
 * Key-value state in buckets the stage grants (`wasi:keyvalue`), for
 * handlers that count, remember or cache.
 *
 * The handler must be built against a world that imports the store: set
 * `"sluice": {"world": "message-handler-keyvalue"}` (or
 * `"message-handler-io"`) in its `package.json`, and its stage must grant
 * `[plugin.capabilities.keyvalue]`. Every failure (the stage's Redis is
 * down, a timeout, a value over the grant's size cap, a bucket not
 * granted) throws a `StoreError`; act on it, typically with a retry:
 *
 *     import { keyvalue } from 'sluice-plugin/keyvalue';
 *
 *     const bucket = keyvalue.open('default');
 *     const seen = bucket.increment('seen', 1);
 */

import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft';
import { deleteMany, getMany, setMany } from 'wasi:keyvalue/batch@0.2.0-draft';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';

import { asBytes } from './records.js';

/**
 * A store operation failed. `kind` is `no-such-store`, `access-denied` (a
 * bucket the stage does not grant) or `other`, with the host's `reason`.
 */
export class StoreError extends Error {
  constructor(kind, reason = '') {
    super(reason ? `${kind}: ${reason}` : kind);
    this.name = 'StoreError';
    this.kind = kind;
    this.reason = reason;
  }
}

/** Run a store call, turning the WIT error it throws into a StoreError. */
function attempt(call) {
  try {
    return call();
  } catch (error) {
    const payload = error?.payload;
    if (payload?.tag === undefined) throw error;
    throw new StoreError(payload.tag, payload.tag === 'other' ? payload.val : '');
  }
}

/** A bucket the stage grants; open it with `keyvalue.open`. */
class Bucket {
  constructor(handle) {
    this.handle = handle;
  }

  /** The value at `key` (a `Uint8Array`), or `undefined` when there is none. */
  get(key) {
    return attempt(() => this.handle.get(key)) ?? undefined;
  }

  /** Set `key` to `value` (bytes, or a string written as UTF-8). */
  set(key, value) {
    attempt(() => this.handle.set(key, asBytes(value)));
  }

  delete(key) {
    attempt(() => this.handle.delete(key));
  }

  exists(key) {
    return attempt(() => this.handle.exists(key));
  }

  /** Every key in the bucket, over all pages (costly on a big one). */
  keys() {
    const keys = [];
    let cursor;
    do {
      const page = attempt(() => this.handle.listKeys(cursor));
      keys.push(...page.keys);
      cursor = page.cursor;
    } while (cursor !== undefined);
    return keys;
  }

  /**
   * Add `delta` to the counter at `key` (0 when absent) and return the
   * new count, a number; the counter is stored as decimal text.
   */
  increment(key, delta) {
    return Number(attempt(() => increment(this.handle, key, BigInt(delta))));
  }

  /** `[key, value]` for each key that has a value, `undefined` for each that has none. */
  getMany(keys) {
    return attempt(() => getMany(this.handle, keys)).map((pair) => pair ?? undefined);
  }

  /** Set each `[key, value]`. */
  setMany(pairs) {
    attempt(() => setMany(this.handle, pairs.map(([key, value]) => [key, asBytes(value)])));
  }

  deleteMany(keys) {
    attempt(() => deleteMany(this.handle, keys));
  }
}

export const keyvalue = {
  /** Open the bucket `name`; a StoreError when the stage does not grant it. */
  open(name) {
    return new Bucket(attempt(() => open(name)));
  },
};
