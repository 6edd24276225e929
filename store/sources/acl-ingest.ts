/**
 * ACLs arrive as binary `system.posix_acl_*` xattrs (directories, umoci tars) or as text
 * (`SCHILY.acl.*` from GNU tar and bsdtar). Either way they leave here as canonical text with
 * numeric ids; an access ACL that only restates the mode bits is dropped, as the kernel does.
 */
import { hostResolver } from '../../native/ids.js';
import { aclFromText, aclFromXattr, aclToText, isMinimalAcl, type Acl } from '../../native/acl.js';
import { NATIVE_ERR, printable, StrataError } from '../../native/errors.js';
import { EntryAcl } from '../types.js';

const ACCESS = 'system.posix_acl_access';
const DEFAULT = 'system.posix_acl_default';

/** Removes the ACL xattrs from `xattrs` and returns them as canonical text. */
export function splitAclXattrs(xattrs: Map<string, Buffer>, where: string): EntryAcl | undefined {
  const access = xattrs.get(ACCESS);
  const dflt = xattrs.get(DEFAULT);
  xattrs.delete(ACCESS);
  xattrs.delete(DEFAULT);
  return combine(access && parse(() => aclFromXattr(access), where), dflt && parse(() => aclFromXattr(dflt), where));
}

/** ACL text from a tar header (GNU newline or bsdtar comma form), merged with any binary xattr form. */
export function aclFromTarText(access: string | undefined, dflt: string | undefined, xattrAcl: EntryAcl | undefined, where: string): EntryAcl | undefined {
  // Most entries have no ACL text: nothing to parse, nothing made.
  if (!access && !dflt) return xattrAcl;
  const fromText = combine(
    access?.trim() ? parse(() => aclFromText(access, hostResolver()), where) : undefined,
    dflt?.trim() ? parse(() => aclFromText(dflt, hostResolver()), where) : undefined,
  );
  if (!fromText) return xattrAcl;
  if (!xattrAcl) return fromText;
  return { access: fromText.access ?? xattrAcl.access, default: fromText.default ?? xattrAcl.default };
}

function combine(access: Acl | undefined, dflt: Acl | undefined): EntryAcl | undefined {
  const out: EntryAcl = {};
  if (access && !isMinimalAcl(access)) out.access = aclToText(access);
  if (dflt && dflt.length > 0) out.default = aclToText(dflt);
  return out.access || out.default ? out : undefined;
}

function parse(fn: () => Acl, where: string): Acl {
  try {
    return fn();
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new StrataError(NATIVE_ERR.ACL_INVALID, `bad ACL on '${printable(where)}': ${printable(msg, 200)}`, { hint: 'the archive is damaged, or its ACL is not a POSIX ACL', cause: e });
  }
}

