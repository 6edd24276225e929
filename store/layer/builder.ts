/**
 * Canonical layers. Sources add entries in whatever order they have them; the builder checks
 * them, then writes the canonical tar and the sidecar manifest:
 *
 * - entries sorted by path, component by component (parents first), root `./` first if present;
 * - ustar headers with numeric ids only, no uname/gname, mtime in whole seconds, mode & 07777,
 *   PAX records only for what ustar cannot hold (long names, large ids/sizes), never xattrs;
 * - a hard-link group is written once: its first path in sorted order carries the content and
 *   the inode's metadata, every other member is a hard link to it;
 * - OCI whiteouts kept as entries, with their metadata zeroed (mode 0, uid/gid 0, mtime 0);
 * - xattrs and ACLs go to the manifest, never into the tar;
 * - nothing that no output can hold (limits.ts): such an entry is refused when added.
 *
 * So the same tree gives the same bytes whatever tool packed it and in whatever order.
 */
import { aclFromText, aclModeBits } from '../../native/acl.js';
import { StrataError, STORE_ERR } from '../errors.js';
import { LayerEntry, comparePaths } from '../types.js';
import { normalizeLayerPath, parentOf, printable, whiteoutTarget } from './path.js';
import { encodeHeader, encodePadding, END_OF_ARCHIVE } from '../tar/writer.js';
import { LayerManifest, manifestEntry } from './manifest.js';
import { checkOutputLimits } from './limits.js';

export type ContentOpener = () => AsyncIterable<Uint8Array>;

interface Staged {
  entry: LayerEntry;
  content?: ContentOpener;
  /** Hard-link group id (the original file's path), for files and hard links. */
  group?: string;
}

export interface BuiltLayer {
  /** The canonical entries in order, each file with its content. */
  items: Array<{ entry: LayerEntry; content?: ContentOpener }>;
  /** Streams the canonical tar. Call once. */
  tar(): AsyncGenerator<Uint8Array>;
  /** The manifest without its `layer` field (known once the tar is hashed). */
  manifest(layerCid: string): LayerManifest;
  entries: number;
  bytes: number;
}

export class LayerBuilder {
  private readonly staged = new Map<string, Staged>();
  private readonly cleanups: Array<() => void> = [];

  /** Runs `fn` at dispose(): sources keep files open until the canonical tar is written. */
  defer(fn: () => void): void {
    this.cleanups.push(fn);
  }

  /** Releases what the sources held open. Call once the tar has been written (or failed). */
  dispose(): void {
    for (const fn of this.cleanups.splice(0).reverse()) fn();
  }

  /** Adds one entry. `entry.path` may be raw (it is normalized here); hard-link names too. */
  add(entry: LayerEntry, content?: ContentOpener): void {
    const p = normalizeLayerPath(entry.path);
    if (this.staged.has(p)) {
      throw new StrataError(STORE_ERR.LAYER_DUPLICATE, `the layer holds '${printable(p)}' twice`, { hint: 'repack it with each path once' });
    }
    // An empty xattr map costs memory on every entry of a large layer: keep none.
    const e: LayerEntry = { ...entry, path: p, mode: modeWithAcl(entry), mtime: Math.floor(entry.mtime), xattrs: entry.xattrs?.size ? entry.xattrs : undefined };
    if (whiteoutTarget(p)) {
      this.staged.set(p, { entry: { path: p, type: 'file', mode: 0, uid: 0, gid: 0, mtime: 0, size: 0 } });
      return;
    }
    checkOutputLimits(e);
    if (e.type === 'hardlink') {
      const target = normalizeLayerPath(e.linkname ?? '', `hard link target of '${printable(p)}'`);
      const t = this.staged.get(target);
      if (!t) {
        throw new StrataError(STORE_ERR.LAYER_BAD_LINK, `hard link '${printable(p)}' points at '${printable(target)}', which is not earlier in the layer`, {
          hint: 'a layer may only link to files it holds itself',
        });
      }
      if (t.entry.type !== 'file' || t.group === undefined) {
        throw new StrataError(STORE_ERR.LAYER_BAD_LINK, `hard link '${printable(p)}' points at '${printable(target)}', which is not a regular file`);
      }
      this.staged.set(p, { entry: { ...e, linkname: t.group, size: 0 }, group: t.group });
      return;
    }
    if (e.type !== 'file') e.size = 0;
    this.staged.set(p, { entry: e, content, group: e.type === 'file' ? p : undefined });
  }

  /** Validates the whole layer and fixes its canonical form. */
  build(): BuiltLayer {
    const paths = [...this.staged.keys()].sort(comparePaths);
    // Every ancestor of every entry is a directory, staged or implicit. Each ancestor is
    // judged once (`dirs`), so the check costs the paths' bytes, not depth × length.
    const dirs = new Set<string>(['.']);
    for (const p of paths) {
      const climbed: string[] = [];
      for (let a = parentOf(p); !dirs.has(a); a = parentOf(a)) {
        const parent = this.staged.get(a);
        if (parent && parent.entry.type !== 'dir') {
          const how = parent.entry.type === 'symlink' ? 'through the symlink' : 'beneath the non-directory';
          throw new StrataError(STORE_ERR.LAYER_UNSAFE_PATH, `entry '${printable(p)}' is written ${how} '${printable(a)}'`, {
            hint: 'refusing a layer that could write outside its root',
          });
        }
        climbed.push(a);
      }
      for (const a of climbed) dirs.add(a);
    }
    // Hard-link groups: the first member in sorted order becomes the file.
    const leader = new Map<string, string>();
    for (const p of paths) {
      const s = this.staged.get(p)!;
      if (s.group !== undefined && !leader.has(s.group)) leader.set(s.group, p);
    }
    const ordered: Staged[] = paths.map((p) => {
      const s = this.staged.get(p)!;
      if (s.group === undefined) return s;
      const first = leader.get(s.group)!;
      const original = this.staged.get(s.group)!;
      if (original === s && first === p) return s; // a file that is its own group's first path (nearly all)
      if (first === p) return { entry: { ...original.entry, path: p, type: 'file' as const, linkname: undefined }, content: original.content };
      const { xattrs: _x, acl: _a, ...meta } = original.entry;
      return { entry: { ...meta, path: p, type: 'hardlink' as const, size: 0, linkname: first } };
    });
    let bytes = 0;
    for (const s of ordered) bytes += s.entry.size;
    return {
      items: ordered,
      entries: ordered.length,
      bytes,
      tar: () => canonicalTar(ordered),
      manifest: (layer) => {
        const entries: LayerManifest['entries'] = {};
        for (const s of ordered) {
          const m = manifestEntry(s.entry);
          if (m) entries[s.entry.path] = m;
        }
        return { manifestVersion: 1, layer, stats: { entries: ordered.length, bytes }, entries };
      },
    };
  }
}

/**
 * With an access ACL the permission bits are the ACL's, as the kernel keeps them (group bits =
 * mask). Tools disagree here (bsdtar writes group:: into the mode), so the canonical form fixes it.
 */
function modeWithAcl(e: LayerEntry): number {
  const mode = e.mode & 0o7777;
  if (!e.acl?.access) return mode;
  const b = aclModeBits(aclFromText(e.acl.access));
  return (mode & 0o7000) | (b.user << 6) | (b.group << 3) | b.other;
}

export function tarPathOf(e: LayerEntry): string {
  if (e.path === '.') return './';
  return e.type === 'dir' ? `${e.path}/` : e.path;
}

async function* canonicalTar(ordered: Staged[]): AsyncGenerator<Uint8Array> {
  for (const { entry: e, content } of ordered) {
    yield encodeHeader({
      path: tarPathOf(e),
      type: e.type,
      mode: e.mode,
      uid: e.uid,
      gid: e.gid,
      mtime: e.mtime,
      size: e.size,
      linkname: e.linkname,
      devmajor: e.devmajor,
      devminor: e.devminor,
    });
    if (e.type !== 'file' || e.size === 0) continue;
    if (!content) throw new StrataError(STORE_ERR.SOURCE_INVALID, `'${printable(e.path)}' has ${e.size} bytes but its source gave no content`, { hint: 'the source is damaged; import it again' });
    let n = 0;
    for await (const chunk of content()) {
      n += chunk.byteLength;
      if (n > e.size) break;
      yield chunk;
    }
    if (n !== e.size) {
      throw new StrataError(STORE_ERR.SOURCE_INVALID, `'${printable(e.path)}' changed while it was imported (expected ${e.size} bytes, read ${n})`, {
        hint: 'import again from a source that is not being written to',
      });
    }
    yield encodePadding(e.size);
  }
  yield END_OF_ARCHIVE;
}
