import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fullNameFromTag, isValidTag, tagFromFullName } from '../store/remote/tag.js';
import { isStrataError, STORE_ERR as ERR } from '../store/errors.js';

const test = suite('registry tag');

test('plain fullNames map readably', () => {
  assert.is(tagFromFullName('mpi/openmpi-2'), 'mpi_openmpi-2');
  assert.is(tagFromFullName('openmpi/4.1.5'), 'openmpi_4.1.5');
  assert.is(tagFromFullName('gcc/.12.2.0'), 'gcc_.12.2.0');
  assert.is(tagFromFullName('Python/3.11.3-GCCcore-12.3.0'), 'Python_3.11.3-GCCcore-12.3.0');
});

test('names that naive mappings confuse get distinct, valid tags that decode back', () => {
  const names = [
    'a/b', 'a_b', 'a/_b', 'a_/b', 'a__b', 'a/__5f', 'a/_5f', 'a_5f', 'a/5f',
    'x/y/z', 'x/y_z', 'x_y/z', 'x_y_z', '.hidden/1', '-dash/1', 'a/.b', 'intel+mkl/2024',
    'r/4.3.1+bioc', 'café/1', 'a b/1', 'tools/1.0~rc1', 'A/1', 'a/1',
    'long/' + 'v'.repeat(200), 'long/' + 'v'.repeat(201), 'x'.repeat(128), 'x'.repeat(127) + '_',
  ];
  const seen = new Map<string, string>();
  for (const n of names) {
    const t = tagFromFullName(n);
    assert.ok(isValidTag(t), `${n} → ${t} is not a valid tag`);
    assert.ok(t.length <= 128);
    const other = seen.get(t);
    assert.is(other, undefined, `${n} and ${other} collide on ${t}`);
    seen.set(t, n);
    if (!t.includes('__h')) assert.is(fullNameFromTag(t), n, `decode ${t}`);
    else assert.is(fullNameFromTag(t), undefined);
  }
  assert.is(tagFromFullName('a/_b'), 'a___5fb');
  assert.is(tagFromFullName('a_/b'), 'a__5f_b');
});

test('exhaustive: all short names over a tricky alphabet are injective', () => {
  const alphabet = ['a', '_', '/', '.', '5', 'f', '-'];
  const seen = new Map<string, string>();
  const walk = (prefix: string, depth: number) => {
    if (prefix !== '' && !prefix.startsWith('/') && !prefix.endsWith('/') && !prefix.includes('//')) {
      const t = tagFromFullName(prefix);
      assert.ok(isValidTag(t), t);
      assert.is(seen.get(t), undefined, `${prefix} collides with ${seen.get(t)}`);
      seen.set(t, prefix);
      assert.is(fullNameFromTag(t), prefix);
    }
    if (depth === 0) return;
    for (const c of alphabet) walk(prefix + c, depth - 1);
  };
  walk('', 5);
  assert.ok(seen.size > 5000);
});

test('over-long names are hashed deterministically and stay distinct', () => {
  const a = 'lib/' + 'x'.repeat(300);
  const b = 'lib/' + 'x'.repeat(299) + 'y';
  assert.is(tagFromFullName(a), tagFromFullName(a));
  assert.is.not(tagFromFullName(a), tagFromFullName(b));
  assert.ok(tagFromFullName(a).length <= 128);
  assert.match(tagFromFullName(a), /^lib_x+__h[0-9a-f]{32}$/);
});

test('invalid fullNames and tags are refused', () => {
  for (const bad of ['', '/a', 'a/', 'a//b']) {
    try {
      tagFromFullName(bad);
      assert.unreachable(`accepted ${JSON.stringify(bad)}`);
    } catch (e) {
      assert.ok(isStrataError(e, ERR.INVALID_ARGUMENT), String(e));
    }
  }
  assert.is(fullNameFromTag('.x'), undefined);
  assert.is(fullNameFromTag('a____b'), undefined);
  assert.is(fullNameFromTag('a__zz'), undefined);
  assert.is(fullNameFromTag('a__2f'), undefined, "'/' must be written '_', so '__2f' is not canonical");
});

test.run();
