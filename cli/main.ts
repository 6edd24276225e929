/**
 * strata's command-line front end (cli/bin.ts runs it): parses the command line, runs the
 * handler, prints what it returns (cli/output.ts) and maps errors to exit codes (0 ok, 1 error,
 * 2 usage). No logic lives here: handlers in cli/commands/ call store/ and compose/ and return
 * data.
 */
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { commandWord, execCommand, withCommandSeparator } from './commands/exec.js';
import type { Action } from './commands/action.js';
import { Context } from './context.js';
import type { GlobalOptions } from './output.js';

export async function main(argv: string[]): Promise<number> {
  const program = new Command('strata');
  program
    .description('content-addressed layer store and Lmod-style module composer')
    .version(packageVersion(), '-V, --version')
    .option('--store <dir>', 'a store on the store path; repeat for more, the first is yours (default $STRATA_PATH, $STRATA_STORE, or ~/.local/share/strata then the site stores)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--stack <dir>', 'where the stack files strata.json and strata.lock are (default $STRATA_STACK, else the working directory)')
    .option('--json', 'print one JSON document on stdout (errors too)')
    .option('-q, --quiet', 'print only results and errors')
    .option('-v, --verbose', 'print stack traces of errors')
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(s),
      // Usage errors are one line too, like every other error.
      outputError: (s, write) => write(`strata: ${s.replace(/^error: /, '').trim()} (see strata --help, or --help after the command)\n`),
    });

  const ctx = new Context(() => program.opts<GlobalOptions>());
  let exit = 0;
  const action: Action =
    (handler) =>
    async (...args) => {
      exit = ctx.out.print(await handler(ctx, ...args));
    };

  // Only the group the command line names is loaded (a `store import` loads neither the
  // composer nor the outputs); help, a bare `strata` or an unknown word get them all.
  const group = GROUP_OF[commandWord(program, argv) ?? ''];
  if (group === undefined || group === 'store') {
    const [{ storeCommands }, { remoteCommands }] = await Promise.all([import('./commands/store.js'), import('./commands/remote.js')]);
    remoteCommands(storeCommands(program, action), action);
  }
  if (group === undefined || group === 'compose') {
    const [{ composeCommands }, { outputCommands }] = await Promise.all([import('./commands/compose.js'), import('./commands/outputs.js')]);
    outputCommands(program, composeCommands(program, action), action);
  }
  if (group === undefined || group === 'exec') execCommand(program, action);

  try {
    await program.parseAsync(withCommandSeparator(program, argv));
    return exit;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    return ctx.out.fail(e, Boolean(program.opts<GlobalOptions>().verbose));
  } finally {
    await ctx.close();
  }
}

/** The top-level commands of each group (the outputs' rebuild, unsquash and inspect are the composer's). */
const GROUP_OF: Record<string, 'store' | 'compose' | 'exec'> = { store: 'store', compose: 'compose', rebuild: 'compose', unsquash: 'compose', inspect: 'compose', exec: 'exec' };

function packageVersion(): string {
  const pkg = new URL('../../package.json', import.meta.url);
  try {
    return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
