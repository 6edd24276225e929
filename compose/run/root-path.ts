/**
 * Paths inside a root directory the way a process chrooted there would see them: a symlink's
 * absolute target starts again at the root, `..` never climbs above it. `strata exec` uses this
 * to find the stack's lock, to make mount points and to look a command up on PATH in a tree it
 * did not make (a sandbox someone else can write to, an image from anywhere), so that no link
 * in that tree can send a read, a mkdir or a mount to the host's own files.
 *
 * The walk re-reads every component with lstat; between the walk and the use a tree that
 * someone else can change could still swap a directory for a link. Mount points are made only
 * in strata's own tmpfs upper layer, which nobody else can write to.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Links followed in one lookup before giving up, as the kernel's limit (ELOOP). */
const MAX_LINKS = 40;

export type Create = 'dir' | 'file';

export interface RootPath {
  /** The host path of the node (inside `root`, no symlink among its components). */
  host: string;
  /** Its path as the chrooted process sees it. */
  inside: string;
  stat: fs.Stats;
}

/**
 * Resolves `p` (absolute or relative to `/`) inside `root`. Missing components are created
 * when `create` says what the last one must be (parents are always directories), else the
 * result is undefined; so is a path running through a non-directory or a symlink loop.
 */
export function resolveInRoot(root: string, p: string, create?: Create): RootPath | undefined {
  const todo = split(p);
  const done: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (name === '..') {
      done.pop();
      continue;
    }
    const host = path.join(root, ...done, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(host);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !create) return undefined;
      if (todo.length > 0 || create === 'dir') fs.mkdirSync(host, { mode: 0o755 });
      else fs.writeFileSync(host, '', { flag: 'wx', mode: 0o644 });
      st = fs.lstatSync(host);
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) return undefined;
      const target = fs.readlinkSync(host);
      if (target.startsWith('/')) done.length = 0;
      todo.unshift(...split(target));
      continue;
    }
    if (todo.length > 0 && !st.isDirectory()) return undefined;
    done.push(name);
  }
  const host = path.join(root, ...done);
  return { host, inside: `/${done.join('/')}`, stat: fs.lstatSync(host) };
}

function split(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}
