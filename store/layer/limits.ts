/**
 * What every output can hold. A layer entry outside these limits would import fine and then
 * fail (or be silently changed) in the sandbox, the SquashFS writer or the extractors, so the
 * builder refuses it at import, with one line naming the entry and the limit:
 *
 *   path               ≤ 4095 bytes                  PATH_MAX − 1: no system call could name a
 *                                                    longer one from the layer root
 *   path component     ≤ 255 bytes                   NAME_MAX (SquashFS: 256)
 *   symlink target     1..4095 bytes, no NUL         symlink(2): PATH_MAX − 1, no empty target
 *   numbers            whole, not negative (mtime excepted)
 *   uid, gid           0..4294967294                 (uid_t)−1 means "no change" to chown
 *   device numbers     major ≤ 4095, minor ≤ 1048575 the kernel's dev_t (12/20 bits), SquashFS's
 *   xattr name         user.*, trusted.*, security.* only, with a non-empty rest, ≤ 255 bytes,
 *                      no NUL                        XATTR_NAME_MAX; SquashFS stores these three
 *                                                    namespaces only (system.posix_acl_* are
 *                                                    ACLs, taken out before this check)
 *   xattr value        ≤ 65536 bytes                 XATTR_SIZE_MAX
 *   xattr names        Σ (name + NUL) ≤ 65536 bytes  XATTR_LIST_MAX
 *   user.* xattrs      on regular files and directories only (the kernel refuses them on
 *                      symlinks, devices and FIFOs)
 *   ACLs               none on symlinks; a default ACL on directories only
 *
 * Whiteout markers (`.wh.*`) are never materialised, so only their paths' safety applies.
 * Mtimes are not limited here: the canonical layer keeps any whole second (outputs that
 * cannot hold one say so themselves).
 */
import { StrataError, STORE_ERR } from '../errors.js';
import type { LayerEntry } from '../types.js';
import { printable } from './path.js';

export const PATH_MAX = 4095;
export const NAME_MAX = 255;
export const SYMLINK_MAX = 4095;
export const ID_MAX = 0xfffffffe;
export const DEV_MAJOR_MAX = 0xfff;
export const DEV_MINOR_MAX = 0xfffff;
export const XATTR_NAME_MAX = 255;
export const XATTR_SIZE_MAX = 65536;
export const XATTR_LIST_MAX = 65536;
const XATTR_NAMESPACES = ['user.', 'trusted.', 'security.'];

function refuse(path: string, what: string, hint = 'no output (image or sandbox) can hold it; repack the source without it'): StrataError {
  return new StrataError(STORE_ERR.SOURCE_INVALID, `'${printable(path)}' ${what}`, { hint });
}

/** Refuses `e` unless its number `v` (named `k`) is whole and not negative. */
function whole(e: LayerEntry, k: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw refuse(e.path, `has ${k} ${v}; it must be a whole number, not negative`, 'the source is damaged');
}

/** Throws SOURCE_INVALID when `e` (canonical path, not a whiteout) is outside the limits above. */
export function checkOutputLimits(e: LayerEntry): void {
  if (e.path !== '.') {
    const n = Buffer.byteLength(e.path);
    if (n > PATH_MAX) throw refuse(e.path, `has a path of ${n} bytes; Linux names at most ${PATH_MAX}`);
    // A path this short has no longer name in it: most are, and are not split (an array per entry).
    if (n > NAME_MAX) {
      for (const part of e.path.split('/')) {
        const n = Buffer.byteLength(part);
        if (n > NAME_MAX) throw refuse(e.path, `has a name of ${n} bytes; Linux and SquashFS hold at most ${NAME_MAX}`);
      }
    }
  }
  if (e.type === 'hardlink') return; // the group's file carries the metadata
  whole(e, 'uid', e.uid);
  whole(e, 'gid', e.gid);
  whole(e, 'size', e.size);
  whole(e, 'device major', e.devmajor ?? 0);
  whole(e, 'device minor', e.devminor ?? 0);
  if (!Number.isSafeInteger(e.mtime)) throw refuse(e.path, `has mtime ${e.mtime}`, 'the source is damaged');
  if (e.type === 'symlink') {
    const n = Buffer.byteLength(e.linkname ?? '');
    if (n === 0) throw refuse(e.path, 'is a symlink with an empty target');
    if (e.linkname!.includes('\0')) throw refuse(e.path, 'is a symlink whose target holds a NUL byte');
    if (n > SYMLINK_MAX) throw refuse(e.path, `is a symlink whose target is ${n} bytes; Linux holds at most ${SYMLINK_MAX}`);
  }
  if (e.uid > ID_MAX || e.gid > ID_MAX) throw refuse(e.path, `is owned by ${e.uid}:${e.gid}; ids above ${ID_MAX} do not exist on Linux`);
  if (e.type === 'char' || e.type === 'block') {
    const maj = e.devmajor ?? 0;
    const min = e.devminor ?? 0;
    if (maj > DEV_MAJOR_MAX || min > DEV_MINOR_MAX) {
      throw refuse(e.path, `is device ${maj}:${min}; Linux and SquashFS hold majors up to ${DEV_MAJOR_MAX} and minors up to ${DEV_MINOR_MAX}`);
    }
  }
  if (e.xattrs) {
    let list = 0;
    for (const [name, value] of e.xattrs) {
      const shown = printable(name, 60);
      const ns = XATTR_NAMESPACES.find((p) => name.startsWith(p));
      if (ns === undefined || name.length === ns.length || name.includes('\0')) {
        throw refuse(e.path, `has the xattr '${shown}'; outputs hold user.*, trusted.* and security.* xattrs (and ACLs) only`);
      }
      const n = Buffer.byteLength(name);
      if (n > XATTR_NAME_MAX) throw refuse(e.path, `has an xattr name of ${n} bytes ('${shown}'); Linux holds at most ${XATTR_NAME_MAX}`);
      if (value.length > XATTR_SIZE_MAX) throw refuse(e.path, `has an xattr '${shown}' of ${value.length} bytes; Linux holds at most ${XATTR_SIZE_MAX}`);
      if (ns === 'user.' && e.type !== 'file' && e.type !== 'dir') {
        throw refuse(e.path, `is a ${e.type} with the xattr '${shown}'; Linux allows user.* xattrs on files and directories only`);
      }
      list += n + 1;
    }
    if (list > XATTR_LIST_MAX) throw refuse(e.path, `has ${e.xattrs.size} xattrs whose names take ${list} bytes; Linux lists at most ${XATTR_LIST_MAX}`);
  }
  if (e.acl) {
    if (e.type === 'symlink' && (e.acl.access || e.acl.default)) throw refuse(e.path, 'is a symlink with an ACL; Linux has no ACLs on symlinks');
    if (e.acl.default && e.type !== 'dir') throw refuse(e.path, `is a ${e.type} with a default ACL; only directories have one`);
  }
}
