/**
 * A node's extended attributes and ACLs as LayerEntry carries them, read from and applied
 * to the filesystem in one place: directory ingest and the sandbox writer use these, so
 * the split "system.posix_acl_* → acl (canonical text), everything else → xattrs" is made
 * the same way everywhere.
 *
 * Same contract as native/xattr.ts: the path itself, never a symlink's target;
 * synchronous; one system call per attribute (no all-or-nothing across attributes).
 */
import { ACL_XATTR_ACCESS, ACL_XATTR_DEFAULT, aclFromText, aclFromXattr, aclToText, aclToXattr, isMinimalAcl, type EntryAcl } from './acl.js';
import { lgetxattr, llistxattr, lsetxattr, type PathArg } from './xattr.js';

export interface NodeAttrs {
  /** Every xattr except system.posix_acl_*; undefined when there are none. */
  xattrs?: Map<string, Buffer>;
  /** Canonical ACL text; undefined when the node has neither an extended access ACL nor a default ACL. */
  acl?: EntryAcl;
}

/**
 * Reads the xattrs and ACLs of `path` itself. A minimal access ACL (equal to the mode
 * bits) is left out, as the kernel never stores one; this keeps sidecars of the same tree
 * equal whichever tool produced it. trusted.* is only visible to CAP_SYS_ADMIN.
 */
export function readNodeAttrs(path: PathArg): NodeAttrs {
  const out: NodeAttrs = {};
  const xattrs = new Map<string, Buffer>();
  const acl: EntryAcl = {};
  for (const name of llistxattr(path)) {
    const value = lgetxattr(path, name);
    if (value === undefined) continue;
    if (name === ACL_XATTR_ACCESS || name === ACL_XATTR_DEFAULT) {
      const parsed = aclFromXattr(value);
      if (parsed.length === 0 || (name === ACL_XATTR_ACCESS && isMinimalAcl(parsed))) continue;
      acl[name === ACL_XATTR_ACCESS ? 'access' : 'default'] = aclToText(parsed);
    } else {
      xattrs.set(name, value);
    }
  }
  if (xattrs.size > 0) out.xattrs = xattrs;
  if (acl.access !== undefined || acl.default !== undefined) out.acl = acl;
  return out;
}

/** One attribute that could not be applied, with the errno code ('EPERM', 'ENOTSUP' ...). */
export interface AttrFailure {
  name: string;
  code: string;
  message: string;
}

/**
 * Sets the given xattrs and ACLs on `path` itself (adds or replaces; attributes not named
 * are left alone). Apply after chown and chmod: chown clears security.capability, and
 * setting an access ACL rewrites the mode's rwx bits to user::, mask:: (or group::) and
 * other::, as setfacl does.
 *
 * With `collect: true`, system-call failures (EPERM for trusted.* and security.* as non-root,
 * ENOTSUP on filesystems without xattrs, user.* on symlinks ...) are returned instead of
 * thrown, so a caller can report them once; invalid ACL text always throws ACL_INVALID.
 */
export function applyNodeAttrs(path: PathArg, attrs: NodeAttrs, opts: { collect?: boolean } = {}): AttrFailure[] {
  const writes: [string, Buffer][] = [...(attrs.xattrs ?? [])];
  if (attrs.acl?.access !== undefined) writes.push([ACL_XATTR_ACCESS, aclToXattr(aclFromText(attrs.acl.access))]);
  if (attrs.acl?.default !== undefined) writes.push([ACL_XATTR_DEFAULT, aclToXattr(aclFromText(attrs.acl.default))]);
  const failed: AttrFailure[] = [];
  for (const [name, value] of writes) {
    try {
      lsetxattr(path, name, value);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (!opts.collect || typeof err.code !== 'string' || err.syscall !== 'lsetxattr') throw e;
      failed.push({ name, code: err.code, message: err.message });
    }
  }
  return failed;
}
