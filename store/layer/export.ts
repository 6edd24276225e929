/**
 * `strata store export M OUT.tar`: the module's layer as a tar that GNU tar and bsdtar restore
 * whole — xattrs as `SCHILY.xattr.<name>` (raw bytes) and ACLs as `SCHILY.acl.access` /
 * `SCHILY.acl.default` (newline-separated, numeric ids), the records GNU tar `--xattrs --acls`
 * reads. Written to a temp file beside OUT and renamed, so OUT is never half written.
 */
import { createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { aclFromText, aclToGnuText } from '../../native/acl.js';
import { StrataError, STORE_ERR } from '../errors.js';
import { tarPathOf } from './builder.js';
import type { LoadedModule, LocalStore } from '../local-store.js';
import { encodeHeader, encodePadding, END_OF_ARCHIVE } from '../tar/writer.js';

export async function exportModule(store: LocalStore, mod: LoadedModule, out: string): Promise<{ entries: number; bytes: number }> {
  const dir = path.dirname(path.resolve(out));
  if (!(await fsp.stat(dir).catch(() => undefined))?.isDirectory()) {
    // Else the error would name the hidden temp file, a path the user never gave.
    throw new StrataError(STORE_ERR.NOT_FOUND, `cannot write ${out}: ${dir} is not a directory`, { hint: 'create the directory first' });
  }
  const tmp = path.join(dir, `.${path.basename(out)}.strata-${process.pid}`);
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
    await pipeline(Readable.from(tar()), createWriteStream(tmp, { mode: 0o644 }));
    await fsp.rename(tmp, out);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  return { entries, bytes };
}
