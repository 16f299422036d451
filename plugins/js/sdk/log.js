/**
 * Log through the host, which tags every record with the plugin's name and
 * version and writes it to the stage's log stream. `console.log` also
 * reaches the host's log, one record per line, but without a level.
 */

import { log as hostLog } from 'sluice:plugin/logging@0.1.0';

export const log = {
  /** Detail only useful while developing the plugin. */
  trace: (message) => hostLog('trace', message),
  debug: (message) => hostLog('debug', message),
  info: (message) => hostLog('info', message),
  /** Something an operator may want to look at. */
  warn: (message) => hostLog('warn', message),
  error: (message) => hostLog('error', message),
};
