/**
 * `strata unsquash IMAGE DIR`: extracts an image (SquashFS or EROFS, told by its magic) and puts
 * back what SquashFS could not hold (an EROFS image holds it already; its acl.json agrees) —
 * each path's POSIX ACLs and original mode (and owning group, when the image changed it),
 * from the image's /.strata/acl.json, in the same pass through the one tree writer: nothing
 * is looked up or changed by path afterwards.
 */
import { aclFromText } from '../native/acl.js';
import { StrataError } from './errors.js';
import { IMAGE_ERR } from './image/errors.js';
import { openImage, q } from './image/index.js';
import { checkPath, extractImage, type Restore } from './tree/image.js';

export interface UnsquashResult {
  entries: number;
  acls: number;
  skipped: Record<string, number>;
  warnings: string[];
}

export async function unsquash(image: string, dir: string): Promise<UnsquashResult> {
  const img = await openImage(image);
  try {
    const restore = (await img.stat('.strata/acl.json')) ? parseAclIndex(image, await img.readFile('.strata/acl.json')) : undefined;
    const r = await extractImage(img, dir, { restore });
    return { entries: r.entries, acls: r.acls, skipped: r.skipped, warnings: r.warnings };
  } finally {
    await img.close();
  }
}

/**
 * /.strata/acl.json as untrusted input: every path canonical, every mode an integer in
 * 0..0o7777, every ACL text parseable, a gid (optional) an id. Anything else is
 * ERR_IMAGE_CORRUPT, before DIR is touched.
 */
function parseAclIndex(image: string, bytes: Buffer): Map<string, Restore> {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new StrataError(IMAGE_ERR.CORRUPT, `${image}: /.strata/acl.json is not valid JSON`);
  }
  const entries = (doc as { entries?: unknown })?.entries;
  if (typeof entries !== 'object' || entries === null || Array.isArray(entries)) {
    throw new StrataError(IMAGE_ERR.CORRUPT, `${image}: /.strata/acl.json is not a strata ACL index`);
  }
  const bad = (p: string, why: string) =>
    new StrataError(IMAGE_ERR.CORRUPT, `${image}: /.strata/acl.json names ${q(p)} ${why}`, { hint: 'the image was altered or not written by strata' });
  const out = new Map<string, Restore>();
  for (const [p, raw] of Object.entries(entries as Record<string, unknown>)) {
    checkPath(p, `${image}: /.strata/acl.json`);
    const e = (raw ?? {}) as Record<string, unknown>;
    const mode = e.mode;
    if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw bad(p, 'with an invalid mode');
    const r: Restore = { mode };
    for (const k of ['access', 'default'] as const) {
      if (e[k] === undefined) continue;
      if (typeof e[k] !== 'string') throw bad(p, `with an invalid ${k} ACL`);
      try {
        aclFromText(e[k] as string);
      } catch {
        throw bad(p, `with an invalid ${k} ACL`);
      }
      r[k] = e[k] as string;
    }
    if (e.gid !== undefined) {
      if (typeof e.gid !== 'number' || !Number.isInteger(e.gid) || e.gid < 0 || e.gid > 0xfffffffe) throw bad(p, 'with an invalid group');
      r.gid = e.gid;
    }
    out.set(p, r);
  }
  return out;
}
