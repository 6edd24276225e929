/**
 * strata against the real Lmod (Debian's lmod), step by step, on one generated module tree:
 * the scenarios of scenarios.ts, each run in a bash driving `lmod bash …` and through strata's
 * CLI, compared after every step on exit status, loaded modules in order, environment
 * (PATH, MANPATH and the variables the modules set) and messages. Two suites: the verbs on the
 * flat part of the tree, and the three-level hierarchy (compiler → MPI → HDF5, two of each).
 * Documented differences are checked both ways: Lmod still does what spec/compose.md says it
 * does, and strata does what it says instead.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { missing, skipSuite } from '../helpers/probe.js';
import { mustRun, removeDir, tempDir } from '../helpers/tmp.js';
import { LMOD, lmodErrorWords, runLmod, runStrata, statements, strataErrorWords, strataMain, words, type Observed } from './harness.js';
import { SCENARIOS, type Scenario, type ScenarioStep } from './scenarios.js';
import { importFlags, TREE, varsOf, writeLuaTree } from './tree.js';

const SPEC = fileURLToPath(new URL('../../../spec/compose.md', import.meta.url));
const VARS = varsOf(TREE);

interface Ctx {
  dir: string;
  modulepath: string;
  store: string;
}

function show(o: Observed): string {
  return JSON.stringify({ exit: o.exit, loaded: o.loaded, env: o.env }, null, 1) + `\n--- said:\n${o.said}`;
}

/**
 * Lmod lists module names in an error ("The following module(s) are unknown: "a" "b"") in the
 * order of a Lua hash table, which changes from run to run; such a run of quoted names is
 * compared as a set (strata names them in the order given).
 */
function sortQuotedRuns(ws: string[]): string[] {
  const out: string[] = [];
  let run: string[] = [];
  const end = () => {
    out.push(...run.sort());
    run = [];
  };
  for (const w of ws) {
    if (/^".*"$/.test(w)) run.push(w);
    else {
      end();
      out.push(w);
    }
  }
  end();
  return out;
}

function compareSaid(step: ScenarioStep, l: Observed, st: Observed, where: string): void {
  const mode = step.said ?? (l.exit === 0 ? 'words' : 'error');
  if (mode === 'none') return;
  if (mode === 'show') {
    assert.equal(statements(st.said), statements(l.said), `${where}: show statements`);
    return;
  }
  if (mode === 'error') {
    const lw = sortQuotedRuns(lmodErrorWords(l.said) ?? []);
    assert.ok(lw.length > 0, `${where}: Lmod said no error:\n${l.said}`);
    const sw = sortQuotedRuns(strataErrorWords(st.said));
    assert.equal(sw.slice(0, lw.length), lw, `${where}: strata's error must start with Lmod's\n  Lmod:   ${lw.join(' ')}\n  strata: ${sw.join(' ')}`);
    return;
  }
  assert.equal(words(st.said), words(l.said), `${where}: messages\n--- Lmod:\n${l.said}\n--- strata:\n${st.said}`);
}

function compareStep(step: ScenarioStep, l: Observed, st: Observed, where: string): void {
  const d = step.differs;
  const differs = (a: string) => d?.aspects.includes(a as never) ?? false;
  if (!differs('exit')) assert.is(st.exit, l.exit, `${where}: exit status\n--- Lmod:\n${show(l)}\n--- strata:\n${show(st)}`);
  if (!differs('loaded')) assert.equal(st.loaded, l.loaded, `${where}: loaded modules\n--- Lmod:\n${show(l)}\n--- strata:\n${show(st)}`);
  if (!differs('env')) assert.equal(st.env, l.env, `${where}: environment\n--- Lmod:\n${show(l)}\n--- strata:\n${show(st)}`);
  if (!differs('said')) compareSaid(step, l, st, where);
  if (!d) return;
  // A documented difference: it is in the spec, Lmod still differs, and strata does what it says.
  assert.ok(readFileSync(SPEC, 'utf8').includes(`[${d.id}]`), `${where}: difference ${d.id} is not listed in spec/compose.md`);
  const lmodDiffers =
    (differs('exit') && l.exit !== st.exit) ||
    (differs('loaded') && JSON.stringify(l.loaded) !== JSON.stringify(st.loaded)) ||
    (differs('env') && JSON.stringify(l.env) !== JSON.stringify(st.env)) ||
    (differs('said') && words(l.said).join(' ') !== words(st.said).join(' '));
  assert.ok(lmodDiffers, `${where}: documented difference ${d.id} no longer differs from Lmod (update the spec)\n--- Lmod:\n${show(l)}\n--- strata:\n${show(st)}`);
  if (d.strata.exit !== undefined) assert.is(st.exit, d.strata.exit, `${where}: strata's exit status (${d.id})`);
  if (d.strata.loaded) assert.equal(st.loaded, d.strata.loaded, `${where}: strata's loaded modules (${d.id})`);
  if (d.strata.said) assert.match(st.said, d.strata.said, `${where}: what strata says (${d.id})`);
}

const USES_COLLECTIONS = /^(save|restore|savelist|describe|disable)$/;

async function runScenario(ctx: Ctx, sc: Scenario, i: number): Promise<void> {
  const base = join(ctx.dir, `s${i}`);
  let store = ctx.store;
  if (sc.steps.some((st) => st.cmd.some((w) => USES_COLLECTIONS.test(w)))) {
    // Collections live in the store: a scenario that saves works on a copy of its own.
    store = join(base, 'store');
    mkdirSync(base, { recursive: true });
    mustRun('cp', ['-a', ctx.store, store]);
  }
  const steps = sc.steps.map((st) => ({ cmd: st.cmd, env: st.env }));
  const lmodRun = runLmod(steps, { modulepath: ctx.modulepath, home: join(base, 'home'), vars: VARS });
  const strata = await runStrata(steps, { store, work: join(base, 'work'), vars: VARS });
  const lmod = await lmodRun;
  sc.steps.forEach((st, k) => compareStep(st, lmod[k]!, strata[k]!, `step ${k + 1} (module ${st.cmd.join(' ')})`));
}

const why = missing({ tools: ['bash', 'base64'], check: () => (existsSync(LMOD) ? undefined : `${LMOD} not installed (Debian package lmod)`) });
if (why) {
  skipSuite('lmod differential', why);
} else {
  const ctx = {} as Ctx;
  const setup = async () => {
    if (ctx.store) return;
    ctx.dir = tempDir('strata-lmod-diff');
    ctx.modulepath = writeLuaTree(join(ctx.dir, 'mf'), TREE);
    ctx.store = join(ctx.dir, 'store');
    const layer = join(ctx.dir, 'layer');
    mkdirSync(join(layer, 'opt'), { recursive: true });
    writeFileSync(join(layer, 'opt', 'README'), 'one layer for every module of the tree\n');
    for (const m of TREE) {
      const r = await strataMain(['--store', ctx.store, '-q', 'store', 'import', m.name, layer, ...importFlags(m), '--allow-missing'], ctx.dir);
      if (r.code !== 0) throw new Error(`import ${m.name}: ${r.stderr}`);
    }
  };

  for (const part of ['verbs', 'hierarchy'] as const) {
    const s = suite(part === 'verbs' ? 'lmod differential: the verbs' : 'lmod differential: the three-level hierarchy');
    s.before(setup);
    SCENARIOS.forEach((sc, i) => {
      if (sc.part === part) s(sc.name, () => runScenario(ctx, sc, i));
    });
    if (part === 'hierarchy') s.after(() => removeDir(ctx.dir));
    s.run();
  }
}
