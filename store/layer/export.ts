/**
 * `strata store export M OUT.tar`: the module's layer as a tar that GNU tar and bsdtar restore
 * whole — xattrs as `SCHILY.xattr.<name>` (raw bytes) and ACLs as `SCHILY.acl.access` /
 * `SCHILY.acl.default` (newline-separated, numeric ids), the records GNU tar `--xattrs --acls`
 * reads. Written to a temp file beside OUT and renamed, so OUT is never half written.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { aclFromText, aclToGnuText } from '../../native/acl.js';
import { StrataError, STORE_ERR } from '../errors.js';
import { tarPathOf } from './builder.js';
import type { LoadedModule, StoreInternals } from '../internals.js';
import { randomBytes } from 'node:crypto';
import { constants as C } from 'node:fs';
import { lookupGroup } from '../../native/ids.js';
import { encodeHeader, encodePadding, END_OF_ARCHIVE } from '../tar/writer.js';

export async function exportModule(store: StoreInternals, mod: LoadedModule, out: string): Promise<{ entries: number; bytes: number }> {
  const dir = path.dirname(path.resolve(out));
  if (!(await fsp.stat(dir).catch(() => undefined))?.isDirectory()) {
    // Else the error would name the hidden temp file, a path the user never gave.
    throw new StrataError(STORE_ERR.NOT_FOUND, `cannot write ${out}: ${dir} is not a directory`, { hint: 'create the directory first' });
  }
  // The temp file is created with O_EXCL|O_NOFOLLOW under a random name: a name planted in OUT's
  // directory (a symlink to a victim) makes the open fail, it is never followed or truncated.
  const tmp = path.join(dir, `.${path.basename(out)}.strata-${process.pid}-${randomBytes(6).toString('hex')}`);
  const fh = await fsp.open(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  let entries = 0;
  let bytes = 0;
  async function* tar(): AsyncGenerator<Uint8Array> {
    for await (const { entry: e, body } of store.readLayer(mod)) {
      const pax: Array<[string, Buffer]> = [];
      for (const [k, v] of e.xattrs ?? []) pax.push([`SCHILY.xattr.${k}`, v]);
      if (e.acl?.access) pax.push(['SCHILY.acl.access', Buffer.from(aclToGnuText(aclFromText(e.acl.access)))]);
      if (e.acl?.default) pax.push(['SCHILY.acl.default', Buffer.from(aclToGnuText(aclFromText(e.acl.default)))]);
      yield encodeHeader({ ...e, path: tarPathOf(e), pax });
      entries++;
      if (e.type === 'file' && e.size > 0) {
        for await (const chunk of body) yield chunk;
        yield encodePadding(e.size);
        bytes += e.size;
      }
    }
    yield END_OF_ARCHIVE;
  }
  try {
    // Headers are 512 bytes: gather chunks into writes of about 1 MiB.
    let batch: Uint8Array[] = [];
    let batched = 0;
    const flush = async () => {
      if (batched > 0) await fh.writev(batch);
      batch = [];
      batched = 0;
    };
    for await (const chunk of tar()) {
      batch.push(chunk);
      batched += chunk.byteLength;
      if (batched >= 1 << 20 || batch.length >= 1024) await flush();
    }
    await flush();
    // Licensed content stays licensed: the export of a restricted module, or of content a
    // restricted module named (restriction follows content), is for its group only.
    const restricted = await store.moduleRestriction(mod.record);
    const group = restricted === null ? undefined : lookupGroup(restricted);
    const mode = 0o666 & ~process.umask();
    if (group !== undefined) await fh.chown(-1, group);
    await fh.chmod(group !== undefined ? mode & 0o660 : mode);
    await fh.sync();
    await fh.close();
    await fsp.rename(tmp, out);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  return { entries, bytes };
}
