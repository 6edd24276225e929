/**
 * What every output carries besides the merged layers:
 *
 *   /.strata/lock.json                  the lock the output was built from
 *   /.strata/acl.json                   every POSIX ACL of the tree, with the path's original mode
 *   /.strata/env.sh                     the modules' environment, for `source`
 *   /.singularity.d/env/90-strata.sh    the same, where Apptainer sources it at start
 *
 * All are root-owned, mtime 0, so they never break byte-identity.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Lock } from './lock.js';
import { lockText } from './lock.js';
import type { EntryAcl, LayerEntry, EnvOp } from '../store/index.js';

export interface AclIndexEntry extends EntryAcl {
  /** The path's permission bits as the layers give them (an image may narrow them). */
  mode: number;
  /** The path's owning group as the layers give it (an image may switch it to a group its ACL names). */
  gid?: number;
}

/** /.strata/acl.json: `{ aclVersion: 1, entries: { "<path>": { mode, gid, access?, default? } } }` */
export interface AclIndex {
  aclVersion: 1;
  entries: Record<string, AclIndexEntry>;
}

export const EMBEDDED_DIRS = ['.singularity.d', '.singularity.d/env', '.strata'];

/** An embedded file's bytes: in memory, or (the ACL index, which grows with the tree) in a file. */
export interface EmbeddedContent {
  size: number;
  /** The bytes, each chunk a buffer of its own. */
  chunks(): AsyncIterable<Buffer>;
}

/**
 * The embedded files of one output, by path. /.strata/acl.json is written to the scratch
 * directory as the plan's ACLs stream (a licensed tree has an ACL on every file: at 200,000
 * files the index was 25 MB, built in memory as an object and then as one string) and read
 * from there by the writers. dispose() removes it.
 */
export class EmbeddedFiles {
  readonly files = new Map<string, EmbeddedContent>();
  private readonly temps: string[] = [];

  constructor(lock: Lock, acls: Iterable<[string, AclIndexEntry]>, tmpDir: string) {
    const env = inMemory(Buffer.from(envScript(lock.env)));
    const aclFile = path.join(tmpDir, `acl-${process.pid}-${randomBytes(6).toString('hex')}.json`);
    this.temps.push(aclFile);
    this.files.set('.singularity.d/env/90-strata.sh', env);
    this.files.set('.strata/acl.json', inFile(aclFile, writeAclIndex(acls, aclFile)));
    this.files.set('.strata/env.sh', env);
    this.files.set('.strata/lock.json', inMemory(Buffer.from(lockText(lock))));
  }

  /** The entries of the embedded directories (those the tree lacks) and files. */
  entries(existingDirs: (p: string) => boolean): LayerEntry[] {
    const meta = { uid: 0, gid: 0, mtime: 0 };
    const dirs: LayerEntry[] = EMBEDDED_DIRS.filter((d) => !existingDirs(d)).map((d) => ({ path: d, type: 'dir', mode: 0o755, size: 0, ...meta }));
    return [...dirs, ...[...this.files].map(([p, c]): LayerEntry => ({ path: p, type: 'file', mode: 0o644, size: c.size, ...meta }))];
  }

  /** Removes what the files keep on disk. Safe to call more than once. */
  dispose(): void {
    for (const f of this.temps.splice(0)) fs.rmSync(f, { force: true });
  }
}

function inMemory(b: Buffer): EmbeddedContent {
  return {
    size: b.length,
    async *chunks() {
      yield b;
    },
  };
}

function inFile(file: string, size: number): EmbeddedContent {
  return {
    size,
    async *chunks() {
      const fh = await fsp.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      try {
        for (let at = 0; at < size; ) {
          const b = Buffer.allocUnsafe(Math.min(CHUNK, size - at));
          const { bytesRead } = await fh.read(b, 0, b.length, at);
          if (bytesRead === 0) throw new Error(`${file} ended at ${at} of ${size} bytes`);
          at += bytesRead;
          yield bytesRead === b.length ? b : b.subarray(0, bytesRead);
        }
      } finally {
        await fh.close();
      }
    },
  };
}

const CHUNK = 1 << 20;

/** A key JavaScript orders before every other in an object (an array index), as JSON.stringify then writes it. */
const ARRAY_INDEX = /^(0|[1-9][0-9]{0,9})$/;
const isArrayIndex = (k: string): boolean => ARRAY_INDEX.test(k) && Number(k) < 2 ** 32 - 1;

/**
 * Writes /.strata/acl.json to `file` as its entries come (in the plan's order), the bytes
 * `JSON.stringify({ aclVersion: 1, entries }, null, 1) + '\n'` gives for the object they would
 * make: the same file as before it was streamed, so images keep their bytes. That includes an
 * object's own order: keys that are array indices ("7", a top-level name) first, ascending,
 * then the rest as inserted. The few such keys are held until the end, and the file is then
 * written again with them first. Returns the file's size.
 */
export function writeAclIndex(acls: Iterable<[string, AclIndexEntry]>, file: string): number {
  const head = '{\n "aclVersion": 1,\n "entries": {';
  const member = (p: string, v: AclIndexEntry): string => `\n  ${JSON.stringify(p)}: ${JSON.stringify(v, null, 1).replace(/\n/g, '\n  ')}`;
  const out = new TextFile(file);
  const indexed: Array<[number, string]> = [];
  let members = 0;
  try {
    out.write(head);
    for (const [p, v] of acls) {
      if (isArrayIndex(p)) indexed.push([Number(p), member(p, v)]);
      else out.write(`${members++ > 0 ? ',' : ''}${member(p, v)}`);
    }
    const tail = members + indexed.length > 0 ? '\n }\n}\n' : '}\n}\n';
    if (indexed.length === 0) {
      out.write(tail);
      return out.close();
    }
    const body = out.close();
    const again = new TextFile(`${file}.indexed`);
    try {
      again.write(head);
      again.write(indexed.sort((a, b) => a[0] - b[0]).map(([, m]) => m).join(','));
      if (members > 0) again.write(',');
      again.copyFrom(file, Buffer.byteLength(head), body);
      again.write(tail);
      again.close();
      fs.renameSync(`${file}.indexed`, file);
    } finally {
      fs.rmSync(`${file}.indexed`, { force: true });
    }
    return fs.statSync(file).size;
  } finally {
    out.close();
  }
}

/** Text written to a new file through a buffer of CHUNK bytes. */
class TextFile {
  private fd: number | undefined;
  private pending = '';
  private size = 0;

  constructor(file: string) {
    this.fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  }

  write(text: string): void {
    this.pending += text;
    if (this.pending.length >= CHUNK) this.flush();
  }

  /** Appends bytes [start, end) of `file`. */
  copyFrom(file: string, start: number, end: number): void {
    this.flush();
    const src = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const b = Buffer.allocUnsafe(CHUNK);
      for (let at = start; at < end; ) {
        const n = fs.readSync(src, b, 0, Math.min(CHUNK, end - at), at);
        if (n === 0) throw new Error(`${file} ended at ${at} of ${end} bytes`);
        this.writeBytes(b.subarray(0, n));
        at += n;
      }
    } finally {
      fs.closeSync(src);
    }
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.writeBytes(Buffer.from(this.pending));
    this.pending = '';
  }

  private writeBytes(b: Buffer): void {
    for (let off = 0; off < b.length; ) off += fs.writeSync(this.fd!, b, off, b.length - off);
    this.size += b.length;
  }

  /** Writes what is pending and closes the file; returns its size. Safe to call again. */
  close(): number {
    if (this.fd !== undefined) {
      this.flush();
      fs.closeSync(this.fd);
      this.fd = undefined;
    }
    return this.size;
  }
}

/** POSIX sh; values single-quoted so nothing in them is expanded. */
export function envScript(env: EnvOp[]): string {
  const q = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;
  const lines = ['# Environment of this strata stack (generated from its lock; do not edit).'];
  for (const e of env) {
    if (e.op === 'set') lines.push(`export ${e.var}=${q(e.value)}`);
    else if (e.op === 'prepend') lines.push(`export ${e.var}=${q(e.value)}"\${${e.var}:+:\$${e.var}}"`);
    else lines.push(`export ${e.var}="\${${e.var}:+\$${e.var}:}"${q(e.value)}`);
  }
  return `${lines.join('\n')}\n`;
}
