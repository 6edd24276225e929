/**
 * The outputs of a stack: `compose sandbox`, `compose squash`, `rebuild`, `unsquash`, `inspect`.
 * The output code (tree writer, image formats, codecs) is imported when one of these runs, so
 * every other command starts without loading it.
 */
import { Command } from 'commander';
import { buildSourceOf } from '../../compose/lock.js';
import { IMAGE_ERR } from '../../compose/image/errors.js';
import type { ImageOptions } from '../../compose/squash.js';
import { isStrataError } from '../../native/errors.js';
import { outputModules } from '../../compose/workspace.js';
import type { Context } from '../context.js';
import { usage } from '../errors.js';
import { plural, result, table, type Result } from '../output.js';
import { human } from '../progress.js';
import type { Action } from './action.js';

interface From {
  lock?: string;
  cids?: string;
}

interface SquashFlags extends From {
  format?: string;
  force?: boolean;
  comp?: string;
  level?: number;
  blockSize?: number;
  workers?: number;
}

function checkFrom(o: From): void {
  if (o.lock && o.cids) throw usage('give --lock or --cids, not both');
}

async function squash(ctx: Context, out: string, o: SquashFlags): Promise<Result> {
  checkFrom(o);
  const { formatOf } = await import('../../compose/image/index.js');
  const { buildImage, checkImageOptions } = await import('../../compose/squash.js');
  let options: ImageOptions;
  try {
    const format = formatOf(out, o.format);
    options = { format, compressor: o.comp as ImageOptions['compressor'], level: o.level, blockSize: o.blockSize, workers: o.workers };
    checkImageOptions(options);
  } catch (e) {
    // Out-of-range option values are command-line usage (exit 2), like a malformed number.
    if (isStrataError(e, IMAGE_ERR.OPTIONS)) throw usage(e.message, e.hint);
    throw e;
  }
  const store = await ctx.store();
  const mods = await outputModules(store, ctx.stackDir, o, ctx.transfer());
  const bar = ctx.progress(`squash ${out}`);
  const r = await buildImage(store, mods, out, { ...options, force: o.force, onProgress: (n, total) => bar.update(n, total) });
  bar.done();
  const warnings =
    r.aclPaths > 0 && options.format !== 'erofs'
      ? [`${plural(r.aclPaths, 'path carries', 'paths carry')} POSIX ACLs, which SquashFS cannot store: kept in /.strata/acl.json, modes narrowed so that no one gets more than the ACL gave them (restore with \`strata unsquash\`)`]
      : [];
  return result(r, () => `wrote ${out}: ${plural(r.entries, 'entry', 'entries')}, ${human(r.bytes)}, sha256 ${r.sha256}`, { warnings });
}

function parseInteger(flag: string): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v)) throw usage(`${flag} takes a whole number, not '${v}'`);
    return Number(v);
  };
}

function imageOptions(c: Command): Command {
  return c
    .option('--format <f>', 'squashfs (default) or erofs (POSIX ACLs kept and enforced by the kernel); OUT ending in .erofs means erofs')
    .option('--comp <name>', 'compressor: squashfs zstd (default), gzip or lz4; erofs lz4 (default), zstd or none')
    .option('--level <n>', 'compression level', parseInteger('--level'))
    .option('--block-size <n>', 'data block size in bytes (squashfs: power of two, 4096..1048576; erofs: the extent size, 8192..1048576)', parseInteger('--block-size'))
    .option('--workers <n>', 'compression threads at most (default: all cores; started as the work needs them; never changes the bytes)', parseInteger('--workers'))
    .option('--force', 'replace OUT even if it is not an image');
}

export function outputCommands(program: Command, compose: Command, action: Action): void {
  compose
    .command('sandbox <dir>')
    .description('write the stack as a directory tree, ACLs and xattrs intact')
    .option('--lock <file>', 'build from this lock instead of the stack')
    .option('--cids <file>', 'build from this hash list')
    .option('--force', 'replace the contents of a non-empty DIR')
    .action(
      action(async (ctx, dir: string, o: From & { force?: boolean }) => {
        checkFrom(o);
        const store = await ctx.store();
        const mods = await outputModules(store, ctx.stackDir, o, ctx.transfer());
        const { buildSandbox } = await import('../../compose/outputs.js');
        const bar = ctx.progress(`sandbox ${dir}`);
        const r = await buildSandbox(store, mods, dir, { force: o.force, onProgress: (n, total) => bar.update(n, total) });
        bar.done();
        const { warnings, ...data } = r;
        return result({ dir: ctx.resolve(dir), ...data }, () => `wrote ${dir}: ${plural(r.entries, 'entry', 'entries')}, ${human(r.bytes)} from ${plural(mods.length, 'module')}`, { warnings });
      }),
    );

  imageOptions(
    compose
      .command('squash <out>')
      .alias('image')
      .description('write the stack as one image (SquashFS, or EROFS with --format erofs / OUT.erofs)')
      .option('--lock <file>', 'build from this lock instead of the stack')
      .option('--cids <file>', 'build from this hash list'),
  ).action(action((ctx, out: string, o: SquashFlags) => squash(ctx, out, o)));

  imageOptions(
    program
      .command('rebuild <lock>')
      .description('rebuild an image from a lock or hash list (same as compose squash --lock/--cids)')
      .requiredOption('-o, --output <file>', 'the image to write'),
  ).action(
    action(async (ctx, file: string, o: SquashFlags & { output: string }) => squash(ctx, o.output, { ...o, ...(await buildSourceOf(file)) })),
  );

  program
    .command('unsquash <image> <dir>')
    .description('extract an image (SquashFS or EROFS) with its POSIX ACLs (SquashFS: from /.strata/acl.json)')
    .action(
      action(async (ctx, image: string, dir: string) => {
        const { unsquash } = await import('../../compose/unsquash.js');
        const { warnings, ...r } = await unsquash(image, dir);
        return result(r, () => `extracted ${plural(r.entries, 'entry', 'entries')} into ${dir}, restored ACLs on ${plural(r.acls, 'path')}`, { warnings });
      }),
    );

  program
    .command('inspect <target>')
    .description('the lock, modules, environment and ACL summary embedded in an image or sandbox')
    .action(
      action(async (ctx, target: string) => {
        const { inspectTarget } = await import('../../compose/outputs.js');
        // Every path's ACLs for --json; people get the counts, which hold nothing per path.
        const info = await inspectTarget(target, { entries: ctx.out.json });
        return result(info, () => [
          `${target}: ${info.kind}`,
          'modules (lowest layer first):',
          ...table(info.lock.modules.map((m) => [`  ${m.fullName}`, m.record])),
          `environment:`,
          ...info.lock.env.map((e) => `  ${e.op} ${e.var}=${e.value}`),
          `ACLs: ${plural(info.acls.paths, 'path')} (${info.acls.withDefault} with default ACLs)`,
        ]);
      }),
    );
}
