/**
 * The gate's content hasher, run as a child of the bench (harness contentHashes): reads
 * NUL-separated paths on stdin, relative to its working directory, and writes
 * "SHA256  PATH\0" for each, as `sha256sum -z` does. Node's crypto is OpenSSL's sha256,
 * which uses the CPU's SHA extensions where coreutils' does not: 300 MB took 0.29 s here
 * against 2.9 s for sha256sum, and the gate hashes every file of every output it checks.
 */
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';

const buf = Buffer.allocUnsafe(1 << 20);
let out: string[] = [];
let outBytes = 0;

function flush(): void {
  const b = Buffer.from(out.join(''), 'utf8');
  out = [];
  outBytes = 0;
  for (let off = 0; off < b.length; ) off += writeSync(1, b, off);
}

for (const path of readFileSync(0, 'utf8').split('\0')) {
  if (!path) continue;
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    for (let n = readSync(fd, buf, 0, buf.length, null); n > 0; n = readSync(fd, buf, 0, buf.length, null)) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  const rec = `${h.digest('hex')}  ${path}\0`;
  out.push(rec);
  outBytes += rec.length;
  if (outBytes >= 1 << 20) flush();
}
flush();
