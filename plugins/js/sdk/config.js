/**
 * The plugin's own settings: the `[plugin.config]` table of the stage file,
 * or `--config key=value` arguments to `sluice test`.
 */

import { entries, get } from 'sluice:plugin/config@0.1.0';

export const config = {
  /** The value of a setting, or `undefined` when it is not set. */
  get(key) {
    return get(key) ?? undefined;
  },

  /** The value of a setting, or `fallback` when it is not set. */
  getOr(key, fallback) {
    return get(key) ?? fallback;
  },

  /** Every setting as [key, value] pairs, sorted by key. */
  entries() {
    return entries();
  },
};
