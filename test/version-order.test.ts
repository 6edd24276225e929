import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  compareVersions,
  compareVersionsStrict,
  joinFullName,
  parseVersion,
  splitFullName,
} from '../compose/version-order.js';

const names = suite('splitFullName');

names('the last component is the version', () => {
  assert.equal(splitFullName('mpi/openmpi-2'), { name: 'mpi', version: 'openmpi-2' });
  assert.equal(splitFullName('openmpi/4.1.5'), { name: 'openmpi', version: '4.1.5' });
  assert.equal(splitFullName('a/b/c'), { name: 'a/b', version: 'c' });
  assert.equal(splitFullName('PrgEnv'), { name: 'PrgEnv', version: '' });
});

names('joinFullName is its inverse', () => {
  for (const f of ['mpi/openmpi-2', 'a/b/c', 'PrgEnv']) {
    const { name, version } = splitFullName(f);
    assert.is(joinFullName(name, version), f);
  }
});

names.run();

const keys = suite('parseVersion');

// Keys printed by Lmod's own src/parseVersion.lua (TACC/Lmod 9.2.5, run under lua5.4)
// for the same inputs: strata must produce the same bytes.
const LMOD_KEYS: Array<[string, string]> = [
  ['1.10', '000000001.000000010.*zfinal'],
  ['1.9', '000000001.000000009.*zfinal'],
  ['2.0rc1', '000000002.*c.000000001.*zfinal'],
  ['2.0', '000000002.*zfinal'],
  ['2.0.0', '000000002.*zfinal'],
  ['2.0a1', '000000002.*a.000000001.*zfinal'],
  ['2.0beta2', '000000002.*beta.000000002.*zfinal'],
  ['2.0dev1', '000000002.*@.000000001.*zfinal'],
  ['2.0-rc1', '000000002.*c.000000001.*zfinal'],
  ['2.4-1', '000000002.000000004.*zfinal-.000000001.*zfinal'],
  ['2.4p1', '000000002.000000004.*zfinal-.000000001.*zfinal'],
  ['2.4-p1', '000000002.000000004.*zfinal-.000000001.*zfinal'],
  ['2.4.1', '000000002.000000004.000000001.*zfinal'],
  ['3.2-0', '000000003.000000002.*zfinal'],
  ['openmpi-2', '*openmpi.*zfinal-.000000002.*zfinal'],
  ['openmpi-10', '*openmpi.*zfinal-.000000010.*zfinal'],
  ['mpich-3', '*mpich.*zfinal-.000000003.*zfinal'],
  ['4.1.5', '000000004.000000001.000000005.*zfinal'],
  ['.5', '000000000.000000005.*zfinal'],
  ['1..2', '000000001.*..000000002.*zfinal'],
  ['1.', '000000001.*zfinal'],
  ['2024a', '000002024.*a.*zfinal'],
  ['1.4-dbg', '000000001.000000004.*dbg.*zfinal'],
  ['R2021a', '*r.000002021.*a.*zfinal'],
  ['-python', '*ython.*zfinal'],
  ['1234567890', '1234567890.*zfinal'],
  ['0007', '000000007.*zfinal'],
  ['v1.2', '*v.000000001.000000002.*zfinal'],
  ['1.2.3-beta.4', '000000001.000000002.000000003.*beta.000000004.*zfinal'],
  ['x86_64', '*x.000000086.*_.000000064.*zfinal'],
];

keys('same keys as Lmod parseVersion', () => {
  for (const [v, k] of LMOD_KEYS) assert.is(parseVersion(v), k, `parseVersion(${JSON.stringify(v)})`);
});

keys('non-ASCII bytes are single characters, not lowered', () => {
  // Lua sees the two UTF-8 bytes of Ä (0xC3 0x84) as two parts.
  assert.is(parseVersion('ÄBC1'), '*\u00c3.*\u0084.*bc.000000001.*zfinal');
});

keys.run();

const order = suite('compareVersions');

/** Each row: a < b in Lmod's order. */
const ASCENDING: Array<[string, string]> = [
  ['1.9', '1.10'],
  ['1.10', '1.11'],
  ['2.0rc1', '2.0'],
  ['2.0a1', '2.0b1'],
  ['2.0b1', '2.0rc1'],
  ['2.0beta2', '2.0rc1'],
  ['2.0dev1', '2.0a1'],
  ['2.0pre1', '2.0'],
  ['2.0preview', '2.0'],
  ['2.4', '2.4-1'],
  ['2.4-1', '2.4.1'],
  ['2.4-1', '2.4-2'],
  ['openmpi-2', 'openmpi-10'],
  ['mpich-3', 'openmpi-2'],
  ['4.1.5', '4.1.6'],
  ['4.1.5', '5'],
  ['1.4-dbg', '1.4'],
  ['2023b', '2024a'],
  ['9', '10'],
  ['', '1'],
  ['11.4.0', '12.3'],
];

order('ascending pairs', () => {
  for (const [a, b] of ASCENDING) {
    assert.ok(compareVersions(a, b) < 0, `${a} < ${b}`);
    assert.ok(compareVersions(b, a) > 0, `${b} > ${a}`);
  }
});

order('Lmod treats these as the same version', () => {
  const same: Array<[string, string]> = [
    ['2.4', '2.4.0'],
    ['3.2', '3.2-0'],
    ['3.2', '3.2p0'],
    ['2.4p2', '2.4-2'],
    ['2.4-p2', '2.4-2'],
    ['1.0-rc1', '1.0rc1'],
    ['1.0RC1', '1.0rc1'],
    ['007', '7'],
  ];
  for (const [a, b] of same) assert.is(compareVersions(a, b), 0, `${a} == ${b}`);
});

order('strict order breaks ties deterministically and sorts a shuffled list', () => {
  assert.ok(compareVersionsStrict('2.4', '2.4.0') !== 0);
  assert.is(Math.sign(compareVersionsStrict('2.4', '2.4.0')), -Math.sign(compareVersionsStrict('2.4.0', '2.4')));
  const sorted = ['1.0-dev', '1.0a1', '1.0b2', '1.0rc1', '1.0', '1.0-1', '1.0.1', '1.2', '1.10', '2.0'];
  const shuffled = [sorted[6], sorted[2], sorted[9], sorted[0], sorted[4], sorted[8], sorted[1], sorted[7], sorted[3], sorted[5]];
  assert.equal([...shuffled].sort(compareVersionsStrict), sorted);
});

order.run();
