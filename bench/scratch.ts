/**
 * Where a run writes: `<data>/scratch`, every output, store and tree of the run.
 *
 * As root, with mkfs.ext4 and losetup at hand, it is an ext4 filesystem made for the run: a
 * sparse file beside it (`<data>/scratch.ext4`) on a loop device with direct I/O, so the
 * data root's page cache holds no second copy. It stays mounted after the run, for
 * inspection, and the next run drops it whole (an unmount and one file deleted). Otherwise,
 * or with BENCH_SCRATCH=dir, it is a directory on the data root's filesystem, emptied at the
 * start of each run.
 *
 * Why a filesystem of its own: the trees a run writes (at the last scale point two of a
 * million files) have to go somewhere once their gate is done. Deleting them took 863 s of a
 * 1,733 s run here (the disk is mounted with `discard`), and on ext4 without a journal every
 * file created in the minutes after a large deletion costs more: GNU tar extracting the
 * 100,000-file point took 52–71 s right after a million files were deleted, and 6.2 s on a
 * fresh filesystem (spec/benchmark.md, Scratch space).
 */
import { existsSync, readdirSync, readFileSync, realpathSync, statfsSync } from 'node:fs';
import { mkdir, rm, truncate, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { BenchError, log, run } from './proc.js';

export interface Scratch {
  dir: string;
  /** 'filesystem': made for this run, so trees set aside are never deleted during it. */
  kind: 'filesystem' | 'directory';
}

/** A mount: where, what type, from which source (mountinfo's unescaped fields). */
export interface Mount {
  mount: string;
  type: string;
  source: string;
}

export function mounts(): Mount[] {
  const unescape = (f: string) => f.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: Mount[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    const mount = unescape(pre?.split(' ')[4] ?? '');
    const [type, source] = (post ?? '').split(' ');
    if (mount && type && source) out.push({ mount, type, source: unescape(source) });
  }
  return out;
}

/** The mount `dir` is on: the last mount over the longest prefix of its real path. */
function mountOf(dir: string): Mount | undefined {
  const real = realpathSync(dir);
  let best: Mount | undefined;
  for (const m of mounts()) {
    const under = real === m.mount || real.startsWith(m.mount === '/' ? '/' : `${m.mount}/`);
    if (under && (!best || m.mount.length >= best.mount.length)) best = m;
  }
  return best;
}

/** Whether an ext4 device has a journal (/proc/fs/jbd2 lists the devices that do); undefined when unknown. */
function journaled(source: string): boolean | undefined {
  try {
    const dev = basename(source);
    return readdirSync('/proc/fs/jbd2').some((n) => n.startsWith(`${dev}-`));
  } catch {
    return undefined;
  }
}

/** The file behind a loop device and whether it uses direct I/O, from sysfs; undefined for other devices. */
function loopBacking(source: string): { file: string; directIo: boolean } | undefined {
  const m = /^\/dev\/(loop\d+)$/.exec(source);
  if (!m) return undefined;
  try {
    const sys = `/sys/block/${m[1]}/loop`;
    return { file: readFileSync(`${sys}/backing_file`, 'utf8').trim(), directIo: readFileSync(`${sys}/dio`, 'utf8').trim() === '1' };
  } catch {
    return undefined;
  }
}

/** The report's line on the scratch space: the filesystem, its device, whether it has a journal. */
export function describeScratch(dir: string): string {
  let m: Mount | undefined;
  try {
    m = mountOf(dir);
  } catch {
    return 'unknown';
  }
  if (!m) return 'unknown';
  const loop = loopBacking(m.source);
  const where = loop
    ? `${m.type} made for this run on ${m.source} (over ${loop.file}${loop.directIo ? ', direct I/O' : ''}), mounted at ${m.mount}`
    : `${m.type} on ${m.source} (mounted at ${m.mount})`;
  if (m.type !== 'ext4') return where;
  const j = journaled(m.source);
  if (j === undefined) return where;
  if (j) return `${where}, with a journal`;
  return loop
    ? `${where}, without a journal like the disk it stands in for; nothing is deleted on it during the run`
    : `${where}, without a journal: creating files there costs every tool more for a few minutes after a large deletion on the machine (spec/benchmark.md)`;
}

const IMAGE = 'scratch.ext4';
/** Room left on the data root's filesystem beside the scratch filesystem's file. */
const MARGIN = 4 * 2 ** 30;
/** Smallest scratch filesystem worth making: the stack section alone writes about 12 GiB. */
const SMALLEST = 16 * 2 ** 30;

/** Unmounts the scratch filesystem a run left under dataRoot (and its loop device), and deletes its file. */
export async function dropScratch(dataRoot: string): Promise<void> {
  const dir = join(dataRoot, 'scratch');
  const real = existsSync(dir) ? realpathSync(dir) : undefined;
  const m = real ? mounts().filter((x) => x.mount === real).pop() : undefined;
  if (m) {
    const t = Date.now();
    const r = await run('umount', [dir], { allowFail: true });
    if (r.code !== 0) await run('umount', ['-l', dir]);
    if (loopBacking(m.source)) await run('losetup', ['-d', m.source], { allowFail: true });
    log(`dropped the last run's scratch filesystem (${((Date.now() - t) / 1000).toFixed(0)} s)`);
  }
  await rm(join(dataRoot, IMAGE), { force: true });
}

/** Why a filesystem of the run's own cannot be made here, or undefined when it can. */
async function cannotMount(dataRoot: string): Promise<string | undefined> {
  if (process.env['BENCH_SCRATCH'] === 'dir') return 'BENCH_SCRATCH=dir';
  if (process.getuid?.() !== 0) return 'not root';
  for (const tool of ['mkfs.ext4', 'losetup']) {
    if ((await run('sh', ['-c', `command -v ${tool}`], { allowFail: true })).code !== 0) return `no ${tool}`;
  }
  const fs = statfsSync(dataRoot);
  if (fs.bavail * fs.bsize - MARGIN < SMALLEST) return `less than ${(SMALLEST + MARGIN) / 2 ** 30} GiB free`;
  return undefined;
}

/**
 * Makes the run's scratch space under dataRoot (see the head of this file), dropping what
 * the last run left. BENCH_SCRATCH: `fs` insists on a filesystem of its own (an error when
 * one cannot be made), `dir` a plain directory; unset, a filesystem when it can be made.
 */
export async function prepareScratch(dataRoot: string): Promise<Scratch> {
  const dir = join(dataRoot, 'scratch');
  const want = process.env['BENCH_SCRATCH'] ?? '';
  if (!['', 'fs', 'dir'].includes(want)) throw new BenchError(`BENCH_SCRATCH=${want}: expected fs or dir`);
  await dropScratch(dataRoot);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const why = await cannotMount(dataRoot);
  if (why) {
    if (want === 'fs') throw new BenchError(`BENCH_SCRATCH=fs: cannot make a scratch filesystem (${why})`);
    log(`scratch: a directory on the data root's filesystem (${why})`);
    return { dir, kind: 'directory' };
  }
  const image = join(dataRoot, IMAGE);
  const fs = statfsSync(dataRoot);
  const bytes = Math.floor((fs.bavail * fs.bsize - MARGIN) / 2 ** 20) * 2 ** 20;
  await writeFile(image, '');
  await truncate(image, bytes); // sparse: blocks are taken as the run writes
  const host = mountOf(dataRoot);
  // The same journal setting as the filesystem it stands in for; one inode per 8 KiB (the
  // million-file point holds two trees of a million files each, most of them under 4 KiB).
  const noJournal = host?.type === 'ext4' && journaled(host.source) === false;
  await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-i', '8192', '-E', 'nodiscard', ...(noJournal ? ['-O', '^has_journal'] : []), image]);
  const dev = (await run('losetup', ['--find', '--show', '--direct-io=on', image])).stdout.trim();
  try {
    // noinit_itable: the file is sparse, its inode tables already read as zeros; without it
    // a kernel thread would write them out during the timed runs.
    await run('mount', ['-t', 'ext4', '-o', 'noinit_itable', dev, dir]);
  } catch (e) {
    await run('losetup', ['-d', dev], { allowFail: true });
    await rm(image, { force: true });
    throw e;
  }
  log(`scratch: ext4 made for this run on ${dev}, ${(bytes / 2 ** 30).toFixed(0)} GiB sparse in ${image}`);
  return { dir, kind: 'filesystem' };
}
