#!/usr/bin/env node
/**
 * strata's command-line front end: parses, prints, maps errors to exit codes (0 ok, 1 error,
 * 2 usage). No logic lives here.
 */
import { Command, CommanderError } from 'commander';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { StrataError } from '../store/errors.js';
import { Store } from '../store/store.js';
import { describeError, GlobalOptions, Output } from './output.js';
import { storeCommands } from './store-commands.js';
import { composeCommands } from './compose-commands.js';

export interface Context {
  global(): GlobalOptions;
  output(): Output;
  store(): Promise<Store>;
  /** Ends the command with exit code 1 and one line on stderr. */
  fail(message: string, hint?: string): never;
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('strata');
  program
    .description('content-addressed layer store and Lmod-style module composer')
    .version(packageVersion(), '-V, --version')
    .option('--store <dir>', 'store directory (default $STRATA_STORE or ~/.local/share/strata)')
    .option('--json', 'print one JSON document on stdout')
    .option('-q, --quiet', 'print only results and errors')
    .option('-v, --verbose', 'print stack traces of errors')
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(s),
      // Usage errors are one line too, like every other error.
      outputError: (s, write) => write(`strata: ${s.replace(/^error: /, '').trim()} (see strata --help, or --help after the command)\n`),
    });

  let opened: Store | undefined;
  const ctx: Context = {
    global: () => program.opts<GlobalOptions>(),
    output: () => new Output(program.opts<GlobalOptions>()),
    store: async () => {
      opened ??= await Store.open(program.opts<GlobalOptions>().store, {
        onWait: (m) => ctx.output().note(`strata: ${m}`),
      });
      return opened;
    },
    fail: (message, hint) => {
      throw new StrataError('ERR_FAILED', message, { hint });
    },
  };
  storeCommands(program, ctx);
  composeCommands(program, ctx);

  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.exitCode === 0 ? 0 : 2;
    }
    const verbose = Boolean(program.opts<GlobalOptions>().verbose);
    const { code, line } = describeError(e, verbose);
    process.stderr.write(`${line}\n`);
    if (verbose && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    return code;
  } finally {
    await opened?.close();
  }
}

function packageVersion(): string {
  const pkg = new URL('../../package.json', import.meta.url);
  try {
    return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function invokedDirectly(): boolean {
  try {
    return realpathSync(process.argv[1] ?? '') === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  // `strata … | head`: a closed pipe ends the output, it is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
  main(process.argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`strata: internal error: ${(e as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}

