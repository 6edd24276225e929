/**
 * Paths inside a root directory the way a process chrooted there would see them: a symlink's
 * absolute target starts again at the root, `..` never climbs above it. `strata exec` uses this
 * to find the stack's lock, to make mount points and to look a command up on PATH in a tree it
 * did not make (a sandbox someone else can write to, an image from anywhere), so that no link
 * in that tree can send a read, a mkdir or a mount to the host's own files.
 *
 * The walk re-reads every component with lstat; between the walk and the use a tree that
 * someone else can change could still swap a directory for a link. Mount points are made only
 * in strata's own upper layer (a tmpfs nobody else can reach), never in the tree.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Links followed in one lookup before giving up, as the kernel's limit (ELOOP). */
const MAX_LINKS = 40;

export interface RootPath {
  /** The host path of the node (inside the root, no symlink among its components). */
  host: string;
  /** Its path as the chrooted process sees it. */
  inside: string;
  stat: fs.Stats;
}

/**
 * Resolves `p` (absolute or relative to `/`) inside `root`; undefined when it does not exist,
 * runs through a non-directory or loops.
 */
export function resolveInRoot(root: string, p: string): RootPath | undefined {
  const done = walk([root], p);
  if (!done) return undefined;
  const host = path.join(root, ...done);
  return { host, inside: `/${done.join('/')}`, stat: fs.lstatSync(host) };
}

/**
 * Makes sure the overlay of `upper` on `lower` will hold a `kind` at `p` (resolved as in
 * resolveInRoot, over both layers): what `lower` lacks is made in `upper`, each directory on
 * the way given the mode (and, where the caller may, the owner) of the one it stands over, so
 * the merged tree looks as before. Returns the path inside, or undefined when `p` runs through
 * a non-directory, loops, or ends at something that is not a `kind`. Call before the overlay
 * is mounted: an overlay's layers must not change under it.
 */
export function makeMountPoint(lower: string, upper: string, p: string, kind: 'dir' | 'file'): string | undefined {
  const done = walk([upper, lower], p, (parents, name, dir) => {
    for (let i = 1; i <= parents.length; i++) {
      const u = path.join(upper, ...parents.slice(0, i));
      if (fs.existsSync(u)) continue;
      const l = fs.lstatSync(path.join(lower, ...parents.slice(0, i)));
      fs.mkdirSync(u, { mode: 0o700 });
      fs.chmodSync(u, l.mode & 0o7777);
      try {
        fs.chownSync(u, l.uid, l.gid);
      } catch {
        // An owner not mapped into this user namespace: the directory stays the caller's.
      }
    }
    const at = path.join(upper, ...parents, name);
    if (dir) fs.mkdirSync(at, { mode: 0o755 });
    else fs.writeFileSync(at, '', { flag: 'wx', mode: 0o644 });
  }, kind === 'dir');
  if (!done) return undefined;
  const st = lstatIn([upper, lower], done)!;
  return st.isDirectory() === (kind === 'dir') ? `/${done.join('/')}` : undefined;
}

function lstatIn(layers: string[], parts: string[]): fs.Stats | undefined {
  for (const l of layers) {
    try {
      return fs.lstatSync(path.join(l, ...parts));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && (e as NodeJS.ErrnoException).code !== 'ENOTDIR') throw e;
    }
  }
  return undefined;
}

/**
 * The components of `p` resolved over `layers` (top first, as an overlay without whiteouts
 * shows them). A missing component is made by `make(parents, name, dir)` when given (`dir`:
 * it must be a directory; the last one is a directory when `lastIsDir`), else the walk fails.
 */
function walk(layers: string[], p: string, make?: (parents: string[], name: string, dir: boolean) => void, lastIsDir = true): string[] | undefined {
  const todo = split(p);
  const done: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (name === '..') {
      done.pop();
      continue;
    }
    let st = lstatIn(layers, [...done, name]);
    if (!st) {
      if (!make) return undefined;
      make(done, name, todo.length > 0 || lastIsDir);
      st = lstatIn(layers, [...done, name])!;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) return undefined;
      const target = readlinkIn(layers, [...done, name]);
      if (target.startsWith('/')) done.length = 0;
      todo.unshift(...split(target));
      continue;
    }
    if (todo.length > 0 && !st.isDirectory()) return undefined;
    done.push(name);
  }
  return done;
}

function readlinkIn(layers: string[], parts: string[]): string {
  for (const l of layers) {
    try {
      return fs.readlinkSync(path.join(l, ...parts));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  throw new Error(`${parts.join('/')} vanished`);
}

function split(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}
