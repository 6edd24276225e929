/**
 * `strata unsquash IMAGE DIR`: extracts an image and puts back what SquashFS could not hold —
 * each path's POSIX ACLs and original mode, from the image's /.strata/acl.json.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { applyNodeAttrs } from '../native/fsops.js';
import { StrataError } from './errors.js';
import { IMAGE_ERR } from './image/errors.js';
import type { AclIndex } from './embedded.js';
import { extractImage, safeJoin } from './squashfs/extract.js';
import { SquashfsImage } from './squashfs/reader.js';

export async function unsquash(image: string, dir: string): Promise<{ entries: number; acls: number; skipped: Record<string, number> }> {
  const img = await SquashfsImage.open(image);
  try {
    const r = await extractImage(img, dir);
    let acls = 0;
    const st = await img.stat('.strata/acl.json');
    if (st) {
      let index: AclIndex;
      try {
        index = JSON.parse((await img.readFile('.strata/acl.json')).toString('utf8')) as AclIndex;
      } catch {
        throw new StrataError(IMAGE_ERR.CORRUPT, `${image}: /.strata/acl.json is not valid JSON`);
      }
      const bad = (p: string, why: string) =>
        new StrataError(IMAGE_ERR.CORRUPT, `${image}: /.strata/acl.json names ${JSON.stringify(p)}, ${why}`, {
          hint: 'the image was altered or not written by strata; DIR holds its tree, with ACLs restored only in part',
        });
      for (const [p, e] of Object.entries(index.entries ?? {})) {
        if (!Number.isInteger(e?.mode) || e.mode < 0 || e.mode > 0o7777) throw bad(p, 'with an invalid mode');
        // The image is untrusted: never follow a symlink it planted (lnk -> /etc, then "lnk/passwd").
        const target = await withinNoFollow(dir, safeJoin(dir, p), p);
        if (target === undefined) throw bad(p, 'which is not a file or directory in the image');
        if (target === 'symlink') continue;
        await fsp.chmod(target, e.mode);
        const failed = applyNodeAttrs(target, { acl: { access: e.access, default: e.default } }, { collect: true });
        if (failed.length > 0) r.skipped.acl = (r.skipped.acl ?? 0) + failed.length;
        else acls++;
      }
      // Restoring ACLs changed ctime only, but chmod on a directory does not touch mtime: nothing to redo.
    }
    return { entries: r.entries, acls, skipped: r.skipped };
  } finally {
    await img.close();
  }
}

/**
 * `target` (= dir/p) if every component of `p` below `dir` is a real directory (not a
 * symlink) and `target` itself exists; 'symlink' when only the last component is a symlink;
 * undefined otherwise.
 */
async function withinNoFollow(dir: string, target: string, p: string): Promise<string | 'symlink' | undefined> {
  if (p === '.') return target;
  const parts = p.split('/');
  let cur = dir;
  for (let i = 0; i < parts.length; i++) {
    cur = path.join(cur, parts[i]!);
    const st = await fsp.lstat(cur).catch(() => undefined);
    if (!st) return undefined;
    if (i === parts.length - 1) return st.isSymbolicLink() ? 'symlink' : target;
    if (!st.isDirectory()) return undefined;
  }
  return undefined;
}
