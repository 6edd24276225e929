/**
 * The gate's content hasher, run as a child of the bench (harness contentHashes): reads
 * NUL-ended paths on stdin, relative to its working directory, and writes "SHA256  PATH\0"
 * for each of its share, as `sha256sum -z` does. The share is the argument "K/N": the K-th
 * (from 0) of N runs of consecutive paths, so that N hashers can be given the same list.
 * Node's crypto is OpenSSL's sha256, which uses the CPU's SHA extensions where coreutils'
 * does not: 300 MB took 0.29 s here against 2.9 s for sha256sum, and the gate hashes every
 * file of every output it checks.
 */
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { createHash, hash } from 'node:crypto';

const buf = Buffer.allocUnsafe(1 << 20);
let out: string[] = [];
let outBytes = 0;

function flush(): void {
  const b = Buffer.from(out.join(''), 'utf8');
  out = [];
  outBytes = 0;
  for (let off = 0; off < b.length; ) off += writeSync(1, b, off);
}

/**
 * The file's sha256, hex. A file that fits the buffer (nearly every file the gate reads) is
 * hashed in one call to crypto.hash, which spares a hash object per file: 100,000 small
 * files took 1.60 s against 1.83 s.
 */
function sha256Of(fd: number): string {
  let n = readSync(fd, buf, 0, buf.length, null);
  if (n < buf.length) {
    const more = readSync(fd, buf, n, buf.length - n, null);
    if (more === 0) return hash('sha256', buf.subarray(0, n), 'hex');
    n += more;
  }
  const h = createHash('sha256').update(buf.subarray(0, n));
  for (n = readSync(fd, buf, 0, buf.length, null); n > 0; n = readSync(fd, buf, 0, buf.length, null)) h.update(buf.subarray(0, n));
  return h.digest('hex');
}

const [k, n] = (process.argv[2] ?? '0/1').split('/').map(Number) as [number, number];
if (!(Number.isInteger(k) && Number.isInteger(n) && k >= 0 && k < n)) {
  process.stderr.write(`hash-files: a share is K/N with 0 <= K < N, not ${process.argv[2]}\n`);
  process.exit(2);
}
const paths = readFileSync(0, 'utf8').split('\0');
if (paths[paths.length - 1] === '') paths.pop();
const per = Math.ceil(paths.length / n);
for (const path of paths.slice(k * per, (k + 1) * per)) {
  const fd = openSync(path, 'r');
  let digest: string;
  try {
    digest = sha256Of(fd);
  } finally {
    closeSync(fd);
  }
  const rec = `${digest}  ${path}\0`;
  out.push(rec);
  outBytes += rec.length;
  if (outBytes >= 1 << 20) flush();
}
flush();
