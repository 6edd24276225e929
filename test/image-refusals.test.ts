/**
 * `compose squash` / `rebuild` refusals through the CLI: an OUT that is a directory or lies
 * in a missing directory, bad flags and an empty stack end with one `strata: …` line (exit 1,
 * or 2 for usage) before any work, and leave no image or temporary file behind.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeDir, tempDir } from './helpers/tmp.js';
import { strata, strataOk, type Workspace } from './helpers/cli.js';

const Cli = suite('image: squash and rebuild refusals');
let tmp = '';
let o: Workspace;

Cli.before.each(() => {
  tmp = tempDir('strata-image-cli-');
  o = { cwd: join(tmp, 'work'), store: join(tmp, 'store') };
  mkdirSync(o.cwd);
});

Cli.after.each(() => {
  removeDir(tmp);
});

Cli('bad OUT, bad flags, empty stack: one line, right exit code, nothing written', () => {
  const empty = strata(['compose', 'squash', 'x.sqfs'], o);
  assert.is(empty.code, 1, empty.stderr);
  assert.match(empty.stderr, /^strata: the stack is empty[^\n]*\n$/);

  mkdirSync(join(tmp, 'src/etc'), { recursive: true });
  writeFileSync(join(tmp, 'src/etc/motd'), 'hi\n');
  strataOk(['-q', 'store', 'import', 'tiny/1', join(tmp, 'src')], o);
  strataOk(['-q', 'compose', 'add', 'tiny/1'], o);
  mkdirSync(join(o.cwd, 'adir'));
  const cases: Array<[string[], number, RegExp]> = [
    [['adir'], 1, /^strata: adir is a directory \(give the image's file name/],
    [['nodir/x.sqfs'], 1, /^strata: directory nodir does not exist/],
    [['x.sqfs', '--block-size', '3000'], 2, /block size 3000/],
    [['x.sqfs', '--block-size', 'big'], 2, /--block-size takes a whole number/],
    [['x.sqfs', '--comp', 'xz'], 2, /compressor xz/],
    [['x.sqfs', '--comp', 'gzip', '--level', '10'], 2, /level 10/],
    [['x.sqfs', '--workers', '0'], 2, /worker/],
    [['x.sqfs', '--lock', 'missing.lock'], 1, /missing\.lock does not exist/],
  ];
  for (const [args, code, msg] of cases) {
    const r = strata(['compose', 'squash', ...args], o);
    assert.is(r.code, code, `squash ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, /^strata: [^\n]+\n$/, `squash ${args.join(' ')}: one line: ${r.stderr}`);
    assert.match(r.stderr, msg, `squash ${args.join(' ')}: ${r.stderr}`);
  }
  const rb = strata(['rebuild', 'nothing.lock', '-o', 'x.sqfs'], o);
  assert.is(rb.code, 1, rb.stderr);
  assert.match(rb.stderr, /^strata: nothing\.lock does not exist( \([^\n]*\))?\n$/);
  assert.equal(readdirSync(o.cwd).sort(), ['adir', 'strata.json', 'strata.lock'], 'no image, no temporary file');
  assert.equal(readdirSync(join(o.cwd, 'adir')), []);
  // And the stack still squashes.
  assert.match(strataOk(['compose', 'squash', 'ok.sqfs'], o), /sha256 [0-9a-f]{64}/);
});

Cli.run();
