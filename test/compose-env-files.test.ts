/**
 * Environment files are data (spec/compose.md): a variable name from an OCI image config that
 * is not a POSIX name is refused at import in one line, and sourcing /.strata/env.sh or
 * /.singularity.d/env/90-strata.sh of a sandbox sets variables and runs nothing, whatever the
 * values hold ($(…), backticks, quotes, newlines, globs). (A hostile name in a pulled record:
 * registry-hostile.test.ts.)
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertOneLineError, strata, type Workspace } from './helpers/cli.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, run, tempDir } from './helpers/tmp.js';

interface Ctx {
  dir: string;
}

/** A test's store is DIR/store; DIR is the cwd. */
const inDir = (dir: string): Workspace => ({ store: join(dir, 'store'), cwd: dir });

const HOSTILE_VALUES: Record<string, string> = {
  SUBST: '$(touch PWNED_SUBST)',
  TICKS: '`touch PWNED_TICKS`',
  QUOTES: `it's "quoted" \\ and ; touch PWNED_SEMI`,
  LINES: 'one\ntouch PWNED_NL\ntwo',
  GLOB: '* ? [a]',
};

const why = missing({ tools: ['umoci', 'sh'] });
if (why) skipSuite('environment files are data', why);
else {
  const test = suite<Ctx>('environment files are data');
  test.before.each((ctx) => {
    ctx.dir = tempDir('strata-env-');
  });
  test.after.each((ctx) => removeDir(ctx.dir));

  test('an OCI image whose config Env names a command is refused in one line', ({ dir }) => {
    const layout = join(dir, 'layout');
    mustRun('umoci', ['init', '--layout', layout]);
    mustRun('umoci', ['new', '--image', `${layout}:t`]);
    mustRun('umoci', ['config', '--image', `${layout}:t`, '--config.env', 'X;touch /tmp/pwned-strata;Y=1']);
    const r = strata(['store', 'import', 'img/1', `oci:${layout}:t`], inDir(dir));
    assertOneLineError(r, 'import of a hostile Env', /Env: environment variable name .*X;touch \/tmp\/pwned-strata;Y.* is not a POSIX name/);
    // A name given on the command line is checked the same way.
    const src = join(dir, 'src');
    mkdirSync(src);
    assert.is(strata(['store', 'import', 'x/1', src, '--setenv', 'A B=1'], inDir(dir)).code, 2);
  });

  test('sourcing the env files of a sandbox sets the values exactly and runs nothing', ({ dir }) => {
    const src = join(dir, 'src');
    mkdirSync(join(src, 'opt'), { recursive: true });
    writeFileSync(join(src, 'opt', 'f'), 'x');
    const flags = Object.entries(HOSTILE_VALUES).flatMap(([k, v]) => ['--setenv', `${k}=${v}`]);
    const imp = strata(['-q', 'store', 'import', 'env/1', src, ...flags, '--prepend', 'PATH=/opt/$(touch PWNED_PATH)/bin'], inDir(dir));
    assert.is(imp.code, 0, imp.stderr.toString());
    assert.is(strata(['-q', 'compose', 'add', 'env/1'], inDir(dir)).code, 0);
    assert.is(strata(['-q', 'compose', 'sandbox', 'sb'], inDir(dir)).code, 0);
    for (const file of ['sb/.strata/env.sh', 'sb/.singularity.d/env/90-strata.sh']) {
      const names = Object.keys(HOSTILE_VALUES);
      const script = `. ./${file} && node -e 'process.stdout.write(JSON.stringify(Object.fromEntries(${JSON.stringify(names)}.map((k) => [k, process.env[k]]).concat([["PATH0", process.env.PATH.split(":")[0]]]))))'`;
      const r = run('sh', ['-c', script], { cwd: dir, env: { PATH: `/usr/bin:/bin:${process.env.PATH}` } });
      assert.is(r.code, 0, `${file}: ${r.stderr}`);
      assert.equal(JSON.parse(r.stdout.toString()), { ...HOSTILE_VALUES, PATH0: '/opt/$(touch PWNED_PATH)/bin' }, `${file}: values exactly as given`);
      for (const p of ['PWNED_SUBST', 'PWNED_TICKS', 'PWNED_SEMI', 'PWNED_NL', 'PWNED_PATH']) assert.not.ok(existsSync(join(dir, p)), `${file}: ${p} was not created`);
    }
  });

  test.run();
}
