/**
 * store/layer/manifest.ts and the builder's manifest, as they stream:
 * - the builder writes, in pieces, the bytes canonicalJson gives for the whole document (a
 *   manifest's CID is unchanged), its entries in JSON's key order, not the layer's;
 * - readManifest reads any JSON layout, whatever the chunks' boundaries, and refuses what is
 *   not a manifest in one line;
 * - ManifestIndex answers lookups made in the layer's order, and refuses one out of it.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LayerBuilder } from '../store/layer/builder.js';
import { manifestEntry, ManifestIndex, readManifest, type ManifestEntry } from '../store/layer/manifest.js';
import { canonicalJson } from '../store/cid.js';
import { comparePaths, type LayerEntry } from '../store/types.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const test = suite<{ dir: string }>('layer manifest: streamed');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-manifest-');
});
test.after.each((ctx) => removeDir(ctx.dir));

const LAYER = 'bafkreigd57hc32lqdjzpoyq5xfd54j4i6ihlsrrx4cphybtbodneavzyke';
/** Paths whose JSON order differs from the layer's ('-' and '.' sort before '/' in JSON, after it in a layer). */
const NAMES = ['a', 'a-b', 'a.b', 'a/b', 'a/b/c', 'b', 'é', 'z"q', '10', '9'];

function entries(): LayerEntry[] {
  const out: LayerEntry[] = [];
  for (const p of NAMES) {
    const dir = NAMES.some((q) => q.startsWith(`${p}/`));
    out.push({
      path: p, type: dir ? 'dir' : 'file', mode: dir ? 0o755 : 0o640, uid: 0, gid: 0, mtime: 0, size: 0,
      acl: { access: 'user::rw-,group::r--,group:50:r--,mask::r--,other::---' },
      ...(p.length % 2 ? { xattrs: new Map([['user.note', Buffer.from(`of ${p}`)], ['trusted.a', Buffer.from([0, 255])]]) } : {}),
    });
  }
  return out;
}

async function drain(it: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of it) void _;
}

test('the builder writes canonicalJson\'s bytes for the whole manifest, spilled or not', async ({ dir }) => {
  for (const budget of [1 << 20, 64]) {
    const b = new LayerBuilder({ tmpDir: dir, budget });
    try {
      for (const e of entries()) b.add(e);
      const built = b.build();
      const canonical: LayerEntry[] = [];
      await drain(built.tar((e) => canonical.push(e)));
      const doc: Record<string, ManifestEntry> = {};
      for (const e of canonical) {
        const m = manifestEntry(e);
        if (m) doc[e.path] = m;
      }
      const want = canonicalJson({ manifestVersion: 1, layer: LAYER, stats: { entries: built.entries, bytes: built.bytes }, entries: doc });
      assert.ok(Buffer.concat([...built.manifest(LAYER)]).equals(want), `budget ${budget}`);
    } finally {
      b.dispose();
    }
  }
});

const DOC = {
  manifestVersion: 1,
  layer: LAYER,
  stats: { entries: 4, bytes: 10 },
  entries: { 'a-b': { acl: { access: 'x' } }, 'a/b': { xattrs: { 'user.k': 'dmFsdWU=' } }, a: { acl: { default: 'd' } }, 'q"}{': {} },
};

/** `text` in chunks of `size` bytes. */
function* pieces(text: string, size: number): Generator<Buffer> {
  const b = Buffer.from(text);
  for (let at = 0; at < b.length; at += size) yield b.subarray(at, at + size);
}

test('readManifest: any layout, any chunk boundaries', async () => {
  for (const text of [JSON.stringify(DOC), JSON.stringify(DOC, null, 3), ` ${JSON.stringify({ stats: DOC.stats, entries: DOC.entries, layer: LAYER, manifestVersion: 1 }, null, '\t')}\n`]) {
    for (const size of [1, 2, 7, 1 << 20]) {
      const seen: Array<[string, ManifestEntry]> = [];
      const head = await readManifest(pieces(text, size), 'the manifest', (p, e, json) => {
        assert.equal(JSON.parse(json), e);
        seen.push([p, e]);
      });
      assert.equal(head, { manifestVersion: 1, layer: LAYER, stats: DOC.stats });
      assert.equal(seen, Object.entries(DOC.entries), `chunks of ${size}`);
    }
  }
});

test('readManifest: what is not a manifest is refused in one line', async () => {
  const bad: Record<string, string> = {
    truncated: JSON.stringify(DOC).slice(0, 60),
    'trailing bytes': `${JSON.stringify(DOC)} {}`,
    'a field twice': JSON.stringify(DOC).replace('"layer":', '"layer":"x","layer":'),
    'no entries': JSON.stringify({ ...DOC, entries: undefined }),
    'an entry not an object': JSON.stringify({ ...DOC, entries: { a: [1] } }),
    'not JSON': '{"entries":{"a":{]}}',
    'not an object': '[]',
    'not UTF-8': Buffer.from([0x7b, 0xff, 0x7d]).toString('latin1'),
  };
  for (const [what, text] of Object.entries(bad)) {
    const bytes = what === 'not UTF-8' ? [Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d])] : pieces(text, 5);
    try {
      await readManifest(bytes, 'manifest of m/1', () => undefined);
      assert.unreachable(what);
    } catch (e) {
      assert.is((e as { code?: string }).code, 'ERR_RECORD_INVALID', what);
      assert.match((e as Error).message, /^manifest of m\/1 is not a layer manifest: [^\n]+$/, what);
    }
  }
});

test('ManifestIndex: lookups in the layer\'s order find every entry', async ({ dir }) => {
  const doc: Record<string, ManifestEntry> = {};
  const paths: string[] = [];
  for (let i = 0; i < 5000; i++) {
    const p = `d${i % 37}/${i % 3 ? 'f' : 'f-'}${i}`;
    paths.push(p);
    if (i % 4) doc[p] = { acl: { access: `user::rw-,group:${i}:r--` } };
  }
  const text = canonicalJson({ manifestVersion: 1, layer: LAYER, stats: { entries: 5000, bytes: 0 }, entries: doc }).toString();
  const index = await ManifestIndex.read(pieces(text, 4096), 'the manifest', dir);
  try {
    const lookup = index.lookup();
    for (const p of paths.sort(comparePaths)) assert.equal(lookup(p), doc[p], p);
    const again = index.lookup();
    assert.equal(again(paths[1]!), doc[paths[1]!], 'a second pass starts over');
    assert.throws(() => again(paths[0]!), /not in canonical order/, 'a lookup out of order is refused');
  } finally {
    index.dispose();
  }
});

test.run();
