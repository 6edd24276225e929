#!/usr/bin/env node
/**
 * The `strata` executable: runs cli/main.ts on this process's command line and owns what only
 * a process has (its exit code, a closed stdout). `npm run build` bundles it with the modules
 * it loads (cli/bundle.mjs) so that a command starts without resolving a hundred files.
 */
import { main } from './main.js';

// The launcher (cli/strata) held NODE_EXTRA_CA_CERTS back from Node's start, which it slows:
// put back, so that the commands strata runs, and the registry client (store/remote/http.ts),
// see the environment as the user set it.
const heldBack = process.env['STRATA_NODE_EXTRA_CA_CERTS'];
if (heldBack !== undefined) {
  delete process.env['STRATA_NODE_EXTRA_CA_CERTS'];
  process.env['NODE_EXTRA_CA_CERTS'] = heldBack;
}

// `strata … | head`: a closed pipe ends the output, it is not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});
let settled = false;
// A command whose work stops waiting on nothing (a stream that never ends) must not look like
// a success: Node would exit 0 with the promise pending.
process.on('beforeExit', () => {
  if (settled) return;
  settled = true;
  process.stderr.write('strata: internal error: the command stopped before it finished (please report it)\n');
  process.exitCode = 1;
});
main(process.argv).then(
  (code) => {
    settled = true;
    process.exitCode = code;
  },
  (e) => {
    settled = true;
    process.stderr.write(`strata: internal error: ${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
