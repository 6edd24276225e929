/**
 * The bridge from commander to handlers: `action(handler)` is what a command's .action() gets.
 * It calls the handler with the command's Context and arguments, prints the Result it returns,
 * and records the exit code. Errors propagate to main, which prints them.
 */
import type { Context } from '../context.js';
import type { Result } from '../output.js';

// Commander passes (…arguments, options, command); handlers declare what they use.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Action = <A extends any[]>(handler: (ctx: Context, ...args: A) => Promise<Result>) => (...args: A) => Promise<void>;
