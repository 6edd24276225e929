/**
 * Codes of the errors compose/ raises (the class, StrataError, is native/errors.ts).
 */
import { StrataError, isStrataError } from '../native/errors.js';
export { StrataError, isStrataError };

export const COMPOSE_ERR = {
  /** A module spec, collection, lock file or hash list that names nothing there. */
  NOT_FOUND: 'ERR_NOT_FOUND',
  /** Modules that may not be loaded together (conflict, family). */
  CONFLICT: 'ERR_CONFLICT',
  /** A restricted module and a user outside its group. */
  ACCESS_DENIED: 'ERR_ACCESS_DENIED',
  /** A stack whose loaded modules' requirements, prereqs or hierarchy parents are not loaded: it is not built. */
  REQUIREMENTS_UNMET: 'ERR_REQUIREMENTS_UNMET',
  /** Requirements that form a loop. */
  REQUIRE_CYCLE: 'ERR_REQUIRE_CYCLE',
  /** strata.json that is not a stack file. */
  STACK_INVALID: 'ERR_STACK_INVALID',
  /** An output asked of an empty stack. */
  STACK_EMPTY: 'ERR_STACK_EMPTY',
  /** A lock or hash list that is not one, or that disagrees with the store. */
  LOCK_INVALID: 'ERR_LOCK_INVALID',
  /** An output target that exists and may not be replaced. */
  TARGET_NOT_EMPTY: 'ERR_TARGET_NOT_EMPTY',
  /** An output target that cannot be one (a directory given for an image, a missing parent). */
  TARGET_INVALID: 'ERR_TARGET_INVALID',
  /** Modules of two licence groups in one output: no mode can keep each group's content from the other. */
  LICENCE_CONFLICT: 'ERR_LICENCE_CONFLICT',
  /** A sandbox whose build was interrupted while its entries were moved into place. */
  INCOMPLETE: 'ERR_INCOMPLETE',
  /** The OS refused to apply something the layers hold, for a reason other than privilege. */
  APPLY_FAILED: 'ERR_APPLY_FAILED',
  /** `exec`: this host cannot give this user a root to run in (user namespaces off, a tool or /dev/fuse missing). */
  EXEC_UNAVAILABLE: 'ERR_EXEC_UNAVAILABLE',
  /** `exec`: mounting the image or building the root failed (a corrupt image, a mount refused). */
  EXEC_SETUP: 'ERR_EXEC_SETUP',
  /** `exec`: the command is not on the stack's PATH inside the root (exit 127, as a shell). */
  COMMAND_NOT_FOUND: 'ERR_COMMAND_NOT_FOUND',
  /** `exec`: the command exists inside the root but may not be run (exit 126, as a shell). */
  COMMAND_NOT_EXECUTABLE: 'ERR_COMMAND_NOT_EXECUTABLE',
} as const;
