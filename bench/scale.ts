/**
 * The scale section: a generated layer of N small files (bench/scale-data.ts) over the Debian
 * base layer, for each N of settings.scale.points. Rows: import, sandbox, SquashFS and EROFS
 * images, time and peak RSS, strata beside sha256sum, GNU tar, mksquashfs, tar2sqfs and
 * mkfs.erofs; three runs per command up to 10,000 files and one above by default, the
 * imports of tars up to 512 MiB three (settings.scale.runsAt and importRunsAt,
 * BENCH_SCALE_RUNS; runs are taken in turn, as in the stack section),
 * every command stopped at BENCH_SCALE_TIMEOUT. The gate compares strata's sandbox and images with the GNU tar tree
 * (snapshotTreeFast: listing, content hashes, xattrs, ACLs) up to BENCH_SCALE_GATE_MAX; the
 * trees are listed right after the sandbox runs, the images after the image runs: SquashFS
 * images as sqfs2tar reads them (snapshotSquashfs: a kernel mount of the million-file image
 * took five times as long), EROFS images through a kernel mount (of the image file itself
 * where the kernel can: harness withMountedImage).
 *
 * Each point works in <scratch>/scale-N/; once the point is done its stores are removed and
 * its trees set aside (harness setAside: never deleted while a later run could create files
 * right after a million were deleted); its images stay for inspection.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { aclsOf, diffTrees, freshPageCache, setAside, snapshotImage, snapshotSquashfs, snapshotTreeFast, startEmptyingTrash, type Outcome, type Row, type SectionResult, type TreeNode } from './harness.js';
import { EXTRACT_SCRIPT, mkfsErofsArgs, mksquashfsArgs, tar2sqfsScript, tarDataEnd } from './peers.js';
import { log } from './proc.js';
import { ensureScaleData, type ScaleStamp } from './scale-data.js';
import { blockCacheOf, EROFS_LEVELS, LEVELS, settings } from './settings.js';
import { erofsArgs, MODULES, squashArgs, STRATA_EXTRAS, type SectionContext } from './stack.js';
import { inTurn, peerSide, sizeOf, type Side } from './strata.js';
import { mainThreadBound, pageFaults, perEntry, scaleCompression } from './why.js';

/** The series of the plot, in legend order; strata's first. */
export const SERIES = ['strata import', 'strata sandbox', 'strata squash', 'strata EROFS', 'sha256sum', 'GNU tar', 'mksquashfs', 'tar2sqfs', 'mkfs.erofs'] as const;
export type Series = (typeof SERIES)[number];

export interface ScalePoint {
  n: number;
  stamp: ScaleStamp;
  series: Partial<Record<Series, Outcome>>;
}

export interface ScaleResult extends SectionResult {
  points: ScalePoint[];
  /** One line per point, for the report's Data section. */
  data: string[];
}

const rm_ = (...ps: string[]) => async () => {
  for (const p of ps) await rm(p, { recursive: true, force: true });
};

/** "10k", "100k", "1M": the short name of a size in row labels. */
export function short(n: number): string {
  if (n >= 1e6 && n % 1e6 === 0) return `${n / 1e6}M`;
  if (n >= 1e3 && n % 1e3 === 0) return `${n / 1e3}k`;
  return String(n);
}

export async function runScale({ data, S, strata, erofsCompressors, final }: SectionContext): Promise<ScaleResult> {
  const cfg = settings.scale;
  const comp = cfg.comp;
  const EC = settings.erofsComp;
  const ecLabel = `${EC}${EROFS_LEVELS[EC] !== undefined && EC !== 'lz4' ? `-${EROFS_LEVELS[EC]}` : ''}`;
  const result: ScaleResult = { rows: [], sizes: [], gate: [], crossChecks: [], points: [], data: [] };
  const baseTar = data.layers.base.tar;
  const baseEnd = tarDataEnd(baseTar);

  for (const n of cfg.points) {
    const sd = await ensureScaleData(data.root, n);
    const opts = { runs: cfg.runsAt(n), timeoutSec: cfg.timeoutSec };
    const tarMiB = sd.stamp.tarBytes / 2 ** 20;
    result.data.push(
      `scale/${n} (generated): ${n} files in ${sd.stamp.dirs} directories under /scale, ${(sd.stamp.bytes / 2 ** 20).toFixed(1)} MiB in files, tar ${tarMiB.toFixed(0)} MiB; over base (debian/12)`,
    );
    await freshPageCache([process.execPath, baseTar, sd.tar]);
    const P = join(S, `scale-${n}`);
    await rm(P, { recursive: true, force: true });
    await mkdir(P, { recursive: true });
    const tag = `scale ${short(n)}`;
    const mod = `scale/${n}`;
    const store = join(P, 'store');
    const stackDir = join(P, 'stack');
    const refTree = join(P, 'ref-tree');
    const sandboxDir = join(P, 'sandbox');
    const point: ScalePoint = { n, stamp: sd.stamp, series: {} };
    result.points.push(point);
    const rows: Row[] = [];

    // --- import: the generated tar into a store that holds only the base --------------
    const importOpts = { ...opts, runs: cfg.importRunsAt(n, sd.stamp.tarBytes) };
    const [sha, imp] = (await inTurn([
      peerSide(`${tag}: sha256sum`, 'sha256sum', [sd.tar], importOpts),
      strata.side(`${tag}: import`, store, ['store', 'import', mod, sd.tar], {
        ...importOpts,
        before: async () => {
          await rm_(store)();
          await strata.call(store, ['store', 'import', MODULES.base, baseTar]);
        },
      }),
    ])) as [Outcome, Outcome];
    rows.push({ what: `${tag}: import (${tarMiB.toFixed(0)} MiB tar)`, strata: imp, peerName: 'sha256sum', peer: sha, goal: { text: '≥ 1.0×', minSpeedup: 1, why: perEntry(n) } });
    point.series['strata import'] = imp;
    point.series['sha256sum'] = sha;

    // Everything after the import needs the module in the store.
    let setup: Outcome | undefined;
    if (imp.kind !== 'measured') setup = imp.kind === 'timeout' ? { kind: 'unavailable', reason: `the import was stopped at ${imp.seconds} s` } : imp;
    else {
      try {
        await strata.warm(store);
        await mkdir(stackDir, { recursive: true });
        await strata.call(store, ['compose', 'add', MODULES.base, mod], stackDir);
      } catch (e) {
        setup = strata.classify(e);
      }
    }
    /** strata's side of a comparison, or why it cannot be timed. */
    const strataSide = (make: () => Side | Outcome): Side | Outcome => setup ?? make();

    // --- sandbox ------------------------------------------------------------------------
    const [gnu, sandbox] = (await inTurn([
      peerSide(`${tag}: GNU tar extraction`, 'bash', ['-c', EXTRACT_SCRIPT, 'extract', refTree, baseTar, sd.tar], { ...opts, before: () => setAside(refTree) }),
      strataSide(() => strata.side(`${tag}: sandbox`, store, ['compose', 'sandbox', sandboxDir], { ...opts, cwd: stackDir, before: () => setAside(sandboxDir) })),
    ])) as [Outcome, Outcome];
    rows.push({ what: `${tag}: sandbox`, strata: sandbox, peerName: 'GNU tar ×2 + whiteouts', peer: gnu, goal: { text: '≥ 1.0×', minSpeedup: 1, why: pageFaults } });
    point.series['strata sandbox'] = sandbox;
    point.series['GNU tar'] = gnu;
    const haveRef = gnu.kind === 'measured';
    /** What a peer that reads the extracted tree gets when there is none. */
    const noTree: Outcome = { kind: 'unavailable', reason: 'no extracted tree (GNU tar was stopped)' };
    // No later run creates a tree: from here on, what is set aside is deleted between the
    // timed runs (harness startEmptyingTrash).
    if (final && n === cfg.points[cfg.points.length - 1]) startEmptyingTrash();

    // --- gate: the trees, listed while the page cache still holds them -------------------
    // Listed after the image runs, a 1,000,000-file tree took 57 s, as long as with the
    // caches dropped (59 s); listed right after it is written, 28 s. Both trees are listed at
    // once (each listing waits on its walks as much as on the CPU). The GNU tar tree's
    // listing is kept for the images' gate below.
    const checked = (outcome: Outcome) => outcome.kind === 'measured' && n <= cfg.gateMax && haveRef;
    log(`${tag}: listing the GNU tar tree and the sandbox`);
    const [ref, sandboxList] = await Promise.all([
      haveRef && n <= Math.max(cfg.gateMax, cfg.crossMax) ? snapshotTreeFast(refTree) : undefined,
      checked(sandbox) ? snapshotTreeFast(sandboxDir, { ignore: STRATA_EXTRAS }) : undefined,
    ]);
    const refAcls = ref && aclsOf(ref);
    const gateDiff = async (name: string, outcome: Outcome, fn: () => Promise<string[]>) => {
      if (outcome.kind !== 'measured') {
        const why = { failed: 'strata command failed', timeout: 'strata command stopped', skipped: 'not run', unavailable: 'strata not available' } as const;
        result.gate.push({ name, diffs: undefined, reason: why[outcome.kind] });
      } else if (n > cfg.gateMax) result.gate.push({ name, diffs: undefined, reason: `above BENCH_SCALE_GATE_MAX=${cfg.gateMax}` });
      else if (!ref) result.gate.push({ name, diffs: undefined, reason: 'no GNU tar tree to compare with' });
      else result.gate.push({ name, diffs: await fn() });
    };
    await gateDiff(`${tag}: sandbox vs GNU tar tree`, sandbox, async () => diffTrees(sandboxList!, ref!));
    await setAside(sandboxDir);

    // --- SquashFS -----------------------------------------------------------------------
    const mksOut = join(P, `mksquashfs-${comp}.sqfs`);
    const t2sOut = join(P, `tar2sqfs-${comp}.sqfs`);
    const sqOut = join(P, `strata-${comp}.sqfs`);
    const [mks, t2s, squash] = (await inTurn([
      !haveRef
        ? noTree
        : n > cfg.mksquashfsMax
          ? { kind: 'skipped', reason: `not run above BENCH_SCALE_MKSQUASHFS_MAX=${cfg.mksquashfsMax} files: mksquashfs 4.5.1 was measured at over 25 minutes for the 1,000,000-file tree` }
          : peerSide(`${tag}: mksquashfs`, 'mksquashfs', mksquashfsArgs(refTree, mksOut, comp), { ...opts, before: rm_(mksOut) }),
      peerSide(`${tag}: tar2sqfs`, 'bash', ['-c', tar2sqfsScript(comp), 'tar2sqfs', t2sOut, baseTar, String(baseEnd), sd.tar, String(sd.stamp.tarBytes)], { ...opts, before: rm_(t2sOut) }),
      strataSide(() => strata.side(`${tag}: squash`, store, squashArgs(sqOut, comp), { ...opts, cwd: stackDir, before: rm_(sqOut, blockCacheOf(store)) })),
    ])) as [Outcome, Outcome, Outcome];
    const sqLabel = `${tag}: squash ${comp}-${LEVELS[comp]}`;
    // Where the generated files are a small part of the stack, the base's compression is the bound (why.ts).
    const why = sd.stamp.bytes * 4 < baseEnd ? scaleCompression : mainThreadBound;
    rows.push({ what: sqLabel, strata: squash, peerName: 'mksquashfs of extracted tree', peer: mks, goal: { text: '≥ 1.0×', minSpeedup: 1, why } });
    rows.push({ what: sqLabel, strata: squash, peerName: 'tar2sqfs of base + generated tar', peer: t2s });
    point.series['strata squash'] = squash;
    point.series['mksquashfs'] = mks;
    point.series['tar2sqfs'] = t2s;

    // --- EROFS --------------------------------------------------------------------------
    const mkfsOut = join(P, `mkfs-${EC}.erofs`);
    const erOut = join(P, `strata-${EC}.erofs`);
    const [mkfs, erofs] = (await inTurn([
      !haveRef
        ? noTree
        : !erofsCompressors.has(EC)
          ? { kind: 'unavailable', reason: `this mkfs.erofs has no ${EC}` }
          : n > cfg.mkfsErofsMax
            ? { kind: 'skipped', reason: `not run above BENCH_SCALE_MKFS_EROFS_MAX=${cfg.mkfsErofsMax} files: mkfs.erofs 1.5 took 88–97 s and 5,613 MiB peak RSS for the 1,000,000-file tree in runs of 2026-11-29; left out to keep the whole run under 20 minutes` }
            : peerSide(`${tag}: mkfs.erofs`, 'mkfs.erofs', mkfsErofsArgs(refTree, mkfsOut, EC), { ...opts, before: rm_(mkfsOut) }),
      strataSide(() => strata.side(`${tag}: EROFS`, store, erofsArgs(erOut, EC), { ...opts, cwd: stackDir, before: rm_(erOut, blockCacheOf(store)) })),
    ])) as [Outcome, Outcome];
    rows.push({ what: `${tag}: EROFS ${ecLabel}`, strata: erofs, peerName: 'mkfs.erofs of extracted tree', peer: mkfs });
    point.series['strata EROFS'] = erofs;
    point.series['mkfs.erofs'] = mkfs;
    result.rows.push(...rows);

    // --- gate: the images, against the GNU tar tree's listing ----------------------------
    // mkfs.erofs was the tree's last reader.
    await setAside(refTree);
    // Both images at once: sqfs2tar mostly uses the CPU, the EROFS mount mostly waits.
    log(`${tag}: checking the images`);
    const [sqList, erList] = await Promise.all([
      checked(squash) ? snapshotSquashfs(sqOut, { ignore: STRATA_EXTRAS }) : undefined,
      checked(erofs) ? snapshotImage(erOut, { ignore: STRATA_EXTRAS }) : undefined,
    ]);
    await gateDiff(`${tag}: strata ${comp} image vs GNU tar tree (image rules)`, squash, async () => diffTrees(sqList!, ref!, { image: true, referenceAcls: refAcls }));
    await gateDiff(`${tag}: strata EROFS image (${EC}) vs GNU tar tree, ACLs included`, erofs, async () => diffTrees(erList!, ref!));
    if (ref && n <= cfg.crossMax) {
      if (t2s.kind === 'measured') result.crossChecks.push({ name: `${tag}: tar2sqfs image vs GNU tar tree (image rules)`, diffs: diffTrees(await snapshotSquashfs(t2sOut), ref, { image: true }) });
      if (mks.kind === 'measured') result.crossChecks.push({ name: `${tag}: mksquashfs image vs GNU tar tree (image rules)`, diffs: diffTrees(await snapshotSquashfs(mksOut), ref, { image: true }) });
      if (mkfs.kind === 'measured') result.crossChecks.push({ name: `${tag}: mkfs.erofs image vs GNU tar tree, ACLs included`, diffs: diffTrees(await snapshotImage(mkfsOut), ref) });
    }

    // --- sizes --------------------------------------------------------------------------
    const sqSize = squash.kind === 'measured' ? await sizeOf(sqOut) : undefined;
    const what = `${tag}: SquashFS ${comp}-${LEVELS[comp]}`;
    result.sizes.push({ what, strata: sqSize, peer: mks.kind === 'measured' ? await sizeOf(mksOut) : undefined, peerName: 'mksquashfs', goal: true });
    result.sizes.push({ what, strata: sqSize, peer: t2s.kind === 'measured' ? await sizeOf(t2sOut) : undefined, peerName: 'tar2sqfs' });
    result.sizes.push({
      what: `${tag}: EROFS ${ecLabel}`,
      strata: erofs.kind === 'measured' ? await sizeOf(erOut) : undefined,
      peer: mkfs.kind === 'measured' ? await sizeOf(mkfsOut) : undefined,
      peerName: 'mkfs.erofs',
    });

    log(`${tag}: setting its trees aside, removing its stores`);
    await setAside(refTree, sandboxDir);
    await rm_(store, stackDir)();
  }
  return result;
}
