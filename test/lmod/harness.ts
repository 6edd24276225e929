/**
 * Runs one scenario — a list of `module` commands — against the real Lmod and against strata,
 * and collects after every step: the exit status, the loaded modules in order, the compared
 * environment variables, and what was said (stderr, and strata's stdout for the views).
 *
 * Lmod: one bash per scenario, each step `lmod bash CMD…` evaluated as the `module` function
 * does, state carried in the environment (LOADEDMODULES, _ModuleTable_), collections in $HOME.
 * strata: the CLI's main() in this process (the same code path as the `strata` command, without
 * a Node start-up per step), in a working directory of the scenario's own; the environment is
 * what the stack's strata.lock env operations make of the starting environment.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../../cli/main.js';

export const LMOD = '/usr/share/lmod/lmod/libexec/lmod';
/** The environment every scenario starts from. */
export const START_ENV: Record<string, string> = { PATH: '/usr/bin:/bin' };

export interface Observed {
  exit: number;
  loaded: string[];
  env: Record<string, string | null>;
  /** stderr (Lmod), or stderr then stdout (strata). */
  said: string;
}

export interface Step {
  /** The command as `module` takes it, e.g. ['-t', 'avail', 'mpi'] or ['load', 'gcc/12.3']. */
  cmd: string[];
  /** Environment for this step only (reset's default modules). */
  env?: Record<string, string>;
}

function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Runs the steps in one bash against Lmod; returns what was observed after each. */
export async function runLmod(steps: readonly Step[], opts: { modulepath: string; home: string; vars: readonly string[] }): Promise<Observed[]> {
  mkdirSync(opts.home, { recursive: true });
  const errFile = join(opts.home, '.lmod-stderr');
  const lines = [
    'set +e',
    `step() {`,
    `  local out rc`,
    `  out=$(${LMOD} bash "$@" 2>${quote(errFile)}); rc=$?`,
    `  eval "$out"`,
    `  printf '@@STEP %s\\n' "$rc"`,
    `  printf '@@LM %s\\n' "\${LOADEDMODULES:-}"`,
    ...opts.vars.map((v) => `  if [ -n "\${${v}+x}" ]; then printf '@@ENV %s=%s\\n' ${v} "\$${v}"; else printf '@@UNSET %s\\n' ${v}; fi`),
    `  printf '@@ERR %s\\n' "$(base64 -w0 < ${quote(errFile)})"`,
    `}`,
  ];
  for (const s of steps) {
    const env = Object.entries(s.env ?? {});
    for (const [k, v] of env) lines.push(`export ${k}=${quote(v)}`);
    lines.push(`step ${s.cmd.map(quote).join(' ')}`);
    for (const [k] of env) lines.push(`unset ${k}`);
  }
  const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn('bash', ['--noprofile', '--norc', '-c', lines.join('\n')], { env: {
      HOME: opts.home,
      MODULEPATH: opts.modulepath,
      LMOD_IGNORE_CACHE: '1',
      LMOD_PAGER: 'none',
      LMOD_REDIRECT: 'no',
      LMOD_COLORIZE: 'no',
      TERM: 'dumb',
      LANG: 'C',
      ...START_ENV,
    } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
  if (r.status !== 0) throw new Error(`bash for Lmod failed (${r.status}): ${r.stderr}`);
  const out: Observed[] = [];
  let cur: Observed | undefined;
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('@@STEP ')) {
      cur = { exit: Number(line.slice(7)), loaded: [], env: {}, said: '' };
      out.push(cur);
    } else if (cur && line.startsWith('@@LM ')) cur.loaded = line.slice(5).split(':').filter((x) => x !== '');
    else if (cur && line.startsWith('@@ENV ')) {
      const kv = line.slice(6);
      const i = kv.indexOf('=');
      cur.env[kv.slice(0, i)] = kv.slice(i + 1);
    } else if (cur && line.startsWith('@@UNSET ')) cur.env[line.slice(8)] = null;
    else if (cur && line.startsWith('@@ERR ')) cur.said = Buffer.from(line.slice(6), 'base64').toString('utf8');
  }
  if (out.length !== steps.length) throw new Error(`Lmod ran ${out.length} of ${steps.length} steps: ${r.stderr}`);
  return out;
}

/** Runs `strata ARGS…` in this process; returns its exit code and what it printed. */
export async function strataMain(args: readonly string[], cwd: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const w1 = process.stdout.write.bind(process.stdout);
  const w2 = process.stderr.write.bind(process.stderr);
  const here = process.cwd();
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  process.stdout.write = ((c: string | Uint8Array) => (out.push(String(c)), true)) as typeof process.stdout.write;
  process.stderr.write = ((c: string | Uint8Array) => (err.push(String(c)), true)) as typeof process.stderr.write;
  try {
    process.chdir(cwd);
    const code = await main(['node', 'strata', ...args]);
    return { code, stdout: out.join(''), stderr: err.join('') };
  } finally {
    process.chdir(here);
    process.stdout.write = w1;
    process.stderr.write = w2;
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** Applies a lock's env operations to the starting environment, as a shell sourcing env.sh would. */
export function applyEnv(ops: ReadonlyArray<{ op: string; var: string; value: string }>, vars: readonly string[]): Record<string, string | null> {
  const env: Record<string, string | null> = {};
  for (const v of vars) env[v] = START_ENV[v] ?? null;
  for (const o of ops) {
    const cur = env[o.var] ?? null;
    if (o.op === 'set') env[o.var] = o.value;
    else if (o.op === 'prepend') env[o.var] = cur ? `${o.value}:${cur}` : o.value;
    else env[o.var] = cur ? `${cur}:${o.value}` : o.value;
  }
  return env;
}

/** Runs the steps against strata (one working directory, `store` already filled). */
export async function runStrata(steps: readonly Step[], opts: { store: string; work: string; vars: readonly string[] }): Promise<Observed[]> {
  mkdirSync(opts.work, { recursive: true });
  const out: Observed[] = [];
  for (const s of steps) {
    const env = { ...(s.env ?? {}) };
    if (env.LMOD_SYSTEM_DEFAULT_MODULES !== undefined) env.STRATA_SYSTEM_DEFAULT_MODULES = env.LMOD_SYSTEM_DEFAULT_MODULES;
    const r = await strataMain(['--store', opts.store, 'compose', ...s.cmd], opts.work, env);
    const stackFile = join(opts.work, 'strata.json');
    const lockFile = join(opts.work, 'strata.lock');
    const stack = existsSync(stackFile) ? (JSON.parse(readFileSync(stackFile, 'utf8')) as { modules: Array<{ fullName: string; inactive?: boolean }> }) : { modules: [] };
    const lock = existsSync(lockFile) ? (JSON.parse(readFileSync(lockFile, 'utf8')) as { env: Array<{ op: string; var: string; value: string }> }) : { env: [] };
    out.push({
      exit: r.code,
      loaded: stack.modules.filter((m) => !m.inactive).map((m) => m.fullName),
      env: applyEnv(lock.env, opts.vars),
      said: r.stderr + r.stdout,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Comparing what was said

/** Lmod's advice after avail, which strata does not print. */
const AVAIL_TRAILER = /If the avail list is too long consider trying:[\s\S]*any of the "keys"\.\s*/;

/**
 * Words of a message for comparison: whitespace runs and line breaks do not matter (Lmod lays
 * lists out in columns where strata writes a line each), nor do rules of dashes, directory
 * titles of avail (Lmod's are MODULEPATH directories, strata's hierarchy levels), or the
 * command name (`module` and `strata compose`).
 */
export function words(text: string): string[] {
  return text
    .replace(AVAIL_TRAILER, '')
    .replace(/^-+ .* -+$/gm, '<level>')
    .replace(/^(strata store|\S*\/\S*):$/gm, '<level>:')
    .replace(/strata compose/g, 'module')
    .replace(/^strata: warning: /gm, '')
    .split(/\s+/)
    .filter((w) => w !== '' && !/^-+$/.test(w));
}

/**
 * The principal sentence of an error: Lmod's from "Lmod has detected the following error:" (or
 * "Lmod Warning:") to the first blank line; strata's one line without `strata: `. strata's hint
 * follows in parentheses, so Lmod's words must be the start of strata's.
 */
export function lmodErrorWords(text: string): string[] | undefined {
  const m = /(Lmod has detected the following error:[\s\S]*?)(\n\s*\n|$)/.exec(text) ?? /Lmod Warning:\s*([\s\S]*?)(\n\s*\n|$)/.exec(text);
  return m ? words(m[1]!) : undefined;
}

export function strataErrorWords(text: string): string[] {
  const line = text.split('\n').find((l) => l.startsWith('strata: ') && !l.startsWith('strata: warning: ')) ?? '';
  // The hint closes the line in parentheses: compare its words, not the brackets.
  return words(line.replace(/^strata: /, '').replace(/ \((.*)\)$/, ' $1'));
}

/** Modulefile statements `show` prints, without Lmod's MODULEPATH lines (strata has no MODULEPATH). */
export function statements(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^[a-z_]+\(/.test(l) && !l.includes('"MODULEPATH"'));
}

/** Writes a file only when it is missing (shared fixtures). */
export function writeOnce(file: string, text: string): void {
  if (!existsSync(file)) writeFileSync(file, text);
}
