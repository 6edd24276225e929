/**
 * Codes of the errors cli/ raises. USAGE is the only error that exits 2: the command line
 * itself is wrong (an unknown option, a value of the wrong form, options that exclude each
 * other). Everything else exits 1.
 */
import { StrataError } from '../native/errors.js';
export { StrataError };

export const CLI_ERR = {
  USAGE: 'ERR_USAGE',
} as const;

export function usage(message: string, hint?: string): StrataError {
  return new StrataError(CLI_ERR.USAGE, message, hint === undefined ? {} : { hint });
}
