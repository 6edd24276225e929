/**
 * `strata exec TARGET -- COMMAND [ARG…]`: a command inside a sandbox or image, with the stack's
 * environment (compose/exec.ts). strata prints nothing of its own but warnings and errors;
 * it exits with the command's status (127 / 126 when the command is missing / not executable).
 */
import { Command } from 'commander';
import { COMPOSE_ERR, isStrataError } from '../../compose/errors.js';
import { result } from '../output.js';
import { usage } from '../errors.js';
import type { Action } from './action.js';

const SHELL_STATUS: Record<string, number> = {
  [COMPOSE_ERR.COMMAND_NOT_FOUND]: 127,
  [COMPOSE_ERR.COMMAND_NOT_EXECUTABLE]: 126,
};

/**
 * `strata exec TARGET CMD --flag` without `--` would have strata parse CMD's options (and
 * `--version` print strata's): everything after TARGET is the command's, so the `--` is put in
 * when it is missing. `argv` is process.argv-shaped (node, script, args…); strata's global
 * options before `exec` are skipped by what `program` declares of them.
 */
/** Where the command word is in `argv` (node, script, global options…, command): past the global options and their values. */
function commandIndex(program: Command, argv: readonly string[]): number {
  let i = 2;
  while (i < argv.length && argv[i]!.startsWith('-') && argv[i] !== '--') {
    const [flag, inline] = argv[i]!.split(/=(.*)/s, 2);
    const opt = program.options.find((o) => o.long === flag || o.short === flag);
    i += opt && (opt.required || opt.optional) && inline === undefined ? 2 : 1;
  }
  return i;
}

/** The top-level command `argv` names, if any. */
export function commandWord(program: Command, argv: readonly string[]): string | undefined {
  return argv[commandIndex(program, argv)];
}

export function withCommandSeparator(program: Command, argv: readonly string[]): string[] {
  const out = [...argv];
  let i = commandIndex(program, out);
  if (out[i] !== 'exec') return out;
  i++;
  while (i < out.length && out[i]!.startsWith('-') && out[i] !== '--') i++;
  // out[i] is TARGET (or '--', or nothing).
  if (i >= out.length || out[i] === '--') return out;
  if (i + 1 < out.length && out[i + 1] !== '--') out.splice(i + 1, 0, '--');
  return out;
}

export function execCommand(program: Command, action: Action): void {
  program
    .command('exec <target> [command...]')
    .description("run a command inside a sandbox or image with the stack's environment (as ch-run: unprivileged, user namespaces); put -- before the command")
    .action(
      action(async (ctx, target: string, command: string[]) => {
        if (command.length === 0) throw usage('exec needs a command', 'strata exec TARGET -- COMMAND [ARG…]');
        try {
          const { execIn } = await import('../../compose/exec.js');
          const status = await execIn(target, command, { cwd: ctx.cwd, onWarning: (m) => ctx.out.warn(m) });
          return result({ status }, undefined, { exitStatus: status });
        } catch (e) {
          if (isStrataError(e) && SHELL_STATUS[e.code] !== undefined) return result({}, undefined, { error: e, exitStatus: SHELL_STATUS[e.code] });
          throw e;
        }
      }),
    );
}
