/**
 * `strata unsquash IMAGE DIR`: extracts an image and puts back what SquashFS could not hold —
 * each path's POSIX ACLs and original mode, from the image's /.strata/acl.json.
 */
import * as fsp from 'node:fs/promises';
import { applyNodeAttrs } from '../native/fsops.js';
import { StrataError, ERR } from '../store/errors.js';
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
        throw new StrataError(ERR.IMAGE_CORRUPT, `${image}: /.strata/acl.json is not valid JSON`);
      }
      for (const [p, e] of Object.entries(index.entries ?? {})) {
        const target = safeJoin(dir, p);
        const s = await fsp.lstat(target);
        if (s.isSymbolicLink()) continue;
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
