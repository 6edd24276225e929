/**
 * The peer tools' command lines, at the settings of bench/settings.ts: GNU tar (layer
 * application with OCI whiteouts), mksquashfs, tar2sqfs (squashfs-tools-ng) and mkfs.erofs
 * (erofs-utils). Each peer gets every core the machine has, as strata does.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { BLOCK_SIZE, EROFS_LEVELS, EROFS_PCLUSTER, LEVELS, type Comp, type ErofsComp } from './settings.js';
import { BenchError, run, sh } from './proc.js';

/**
 * The peer's layer application: for each tar, bottom first, apply its OCI whiteouts to what
 * the lower layers left (`.wh.NAME` removes NAME, `.wh..wh..opq` empties the directory),
 * then extract the tar without the whiteout entries. $1 = destination, then the tars.
 */
export const EXTRACT_SCRIPT = `set -euo pipefail
dest=$1; shift
mkdir -p "$dest"
for t in "$@"; do
  tar --quoting-style=literal -tf "$t" | { grep -E '(^|/)\\.wh\\.' || true; } | while IFS= read -r p; do
    p=\${p#./}
    case $p in */*) d=\${p%/*} ;; *) d=. ;; esac
    b=\${p##*/}
    if [ "$b" = .wh..wh..opq ]; then
      if [ -d "$dest/$d" ]; then find "$dest/$d" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +; fi
    else
      rm -rf -- "$dest/$d/\${b#.wh.}"
    fi
  done
  tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf "$t" -C "$dest" --exclude='.wh.*'
done
`;

/** GNU tar's options for a tar of a whole tree, as the layer tars are made (bench/data.ts). */
export const TAR_CREATE = ['--xattrs', '--xattrs-include=*', '--acls', '--format=pax', '--numeric-owner', '--sort=name'];

export function mksquashfsArgs(tree: string, out: string, comp: Comp): string[] {
  return [tree, out, '-noappend', '-quiet', '-no-progress', '-comp', comp, '-Xcompression-level', String(LEVELS[comp]), '-b', String(BLOCK_SIZE)];
}

/** tar2sqfs's options at the shared settings; it reads the tar on stdin. */
export function tar2sqfsArgs(out: string, comp: Comp): string[] {
  return ['-q', '-f', '-c', comp, '-X', `level=${LEVELS[comp]}`, '-b', String(BLOCK_SIZE), '-j', String(availableParallelism()), out];
}

/**
 * A bash script (for `bash -c SCRIPT tar2sqfs …`) that streams tars into tar2sqfs as one
 * archive: $1 = output, then pairs of (tar, bytes to take of it). Every tar but the last is
 * cut before its end-of-archive blocks (tarDataEnd), so tar2sqfs reads the members of all.
 * The caller guarantees that the tars do not hold the same path twice (tar2sqfs applies
 * no whiteouts and no layering).
 */
export function tar2sqfsScript(comp: Comp): string {
  return `set -euo pipefail
out=$1; shift
{ while [ $# -gt 0 ]; do head -c "$2" -- "$1"; shift 2; done; } | tar2sqfs ${tar2sqfsArgs('"$out"', comp).join(' ')}
`;
}

/** mkfs.erofs options: uncompressed (comp undefined) or the compressed mode at EROFS_PCLUSTER. */
export function mkfsErofsArgs(tree: string, out: string, comp: ErofsComp | undefined): string[] {
  const args = ['--quiet'];
  if (comp !== undefined) {
    const level = EROFS_LEVELS[comp];
    args.push(`-z${comp}${level !== undefined && comp !== 'lz4' ? `,${level}` : ''}`, `-C${EROFS_PCLUSTER}`);
  }
  return [...args, out, tree];
}

/** Compressors this machine's mkfs.erofs offers ("Available compressors are: lz4hc, lz4"). */
export async function mkfsErofsCompressors(): Promise<Set<string>> {
  const r = await run('mkfs.erofs', ['--help'], { allowFail: true }).catch(() => undefined);
  const m = /Available compressors are:\s*(.*)/.exec(`${r?.stdout ?? ''}\n${r?.stderr ?? ''}`);
  return new Set((m?.[1] ?? '').split(/[,\s]+/).filter(Boolean));
}

/**
 * Offset of a tar's end-of-archive marker (the first all-zero header block): the bytes
 * before it are the members. Reads only the headers (ustar octal or base-256 sizes; pax and
 * GNU long-name records are members like any other).
 */
export function tarDataEnd(path: string): number {
  const fd = openSync(path, 'r');
  const h = Buffer.alloc(512);
  let off = 0;
  try {
    for (;;) {
      if (readSync(fd, h, 0, 512, off) !== 512) throw new BenchError(`${path}: no end-of-archive block`);
      if (h.every((b) => b === 0)) return off;
      const f = h.subarray(124, 136);
      let size: number;
      if (f[0]! & 0x80) {
        size = 0;
        for (let i = 1; i < 12; i++) size = size * 256 + f[i]!;
      } else size = parseInt(f.toString('latin1').replace(/[\0 ]+$/, '').trim() || '0', 8);
      if (!Number.isFinite(size)) throw new BenchError(`${path}: bad size field at ${off}`);
      off += 512 + Math.ceil(size / 512) * 512;
    }
  } finally {
    closeSync(fd);
  }
}

/** Shell-quoted command line, for scripts. */
export const cmdline = (argv: string[]) => argv.map(sh).join(' ');
