/**
 * Mounting an image for `strata exec`, read-only, in the caller's mount namespace, at a
 * directory only the caller can reach (the run's 0700 stage), and unmounting it after.
 *
 *   root      the kernel: mount -t squashfs|erofs -o ro,loop,nodev,nosuid (the loop device is
 *             set to clear itself when the filesystem goes); squashfuse/erofsfuse if the kernel
 *             refuses and one is installed
 *   others    squashfuse (or erofsfuse for EROFS), through the setuid fusermount3; needs
 *             /dev/fuse open to the caller
 *
 * Formats, by their superblock magic:
 *   SquashFS  "hsqs" at byte 0 (0x73717368 little-endian)
 *   EROFS     0xE0F5E1E2 little-endian at byte 1024
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { printable } from '../../native/errors.js';
import { COMPOSE_ERR, StrataError } from '../errors.js';
import { findTool, runTool } from './tools.js';

export type ImageFormat = 'squashfs' | 'erofs';

const SQUASHFS_MAGIC = 0x73717368;
const EROFS_MAGIC = 0xe0f5e1e2;
const EROFS_MAGIC_OFFSET = 1024;

/** The format of an image file by its magic, undefined for anything else. */
export async function imageFormat(file: string): Promise<ImageFormat | undefined> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(EROFS_MAGIC_OFFSET + 4);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    if (bytesRead >= 4 && buf.readUInt32LE(0) === SQUASHFS_MAGIC) return 'squashfs';
    if (bytesRead >= EROFS_MAGIC_OFFSET + 4 && buf.readUInt32LE(EROFS_MAGIC_OFFSET) === EROFS_MAGIC) return 'erofs';
    return undefined;
  } finally {
    await fh.close();
  }
}

export interface MountedImage {
  dir: string;
  via: 'kernel' | 'squashfuse' | 'erofsfuse';
  /**
   * Unmounts; when the filesystem is still busy (a process the command left behind still
   * uses it) it is detached lazily and goes when the last user does. Returns a warning when
   * even that failed, else undefined. Never throws.
   */
  unmount(): Promise<string | undefined>;
}

const FUSE_TOOL: Record<ImageFormat, 'squashfuse' | 'erofsfuse'> = { squashfs: 'squashfuse', erofs: 'erofsfuse' };

/** Mounts `file` (of `format`) read-only at the empty directory `dir`. */
export async function mountImage(file: string, format: ImageFormat, dir: string, asRoot: boolean): Promise<MountedImage> {
  const name = printable(file);
  let kernelMessage: string | undefined;
  if (asRoot) {
    const mount = findTool('mount');
    const umount = findTool('umount');
    if (mount && umount) {
      const r = await runTool(mount, ['-t', format, '-o', 'ro,loop,nodev,nosuid', '--', file, dir]);
      if (r.code === 0) return mounted(dir, 'kernel', umount, [], ['-l']);
      kernelMessage = r.message;
    }
  }
  const fuse = FUSE_TOOL[format];
  const tool = findTool(fuse);
  const fusermount = findTool('fusermount3') ?? findTool('fusermount');
  if (!tool || !fusermount) {
    if (kernelMessage !== undefined) throw new StrataError(COMPOSE_ERR.EXEC_SETUP, `cannot mount ${name}: ${kernelMessage}`);
    throw new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, `cannot mount the ${format === 'squashfs' ? 'SquashFS' : 'EROFS'} image ${name} without root: ${fuse} is not installed`, {
      hint: `install ${fuse} (and fuse3), or extract the image with \`strata unsquash\` and exec the directory`,
    });
  }
  if (!asRoot && !openToCaller('/dev/fuse')) {
    throw new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, `cannot mount ${name} without root: /dev/fuse is not open to you`, {
      hint: 'ask your admin to make /dev/fuse mode 0666 (the usual default), or extract the image with `strata unsquash` and exec the directory',
    });
  }
  const r = await runTool(tool, [file, dir]);
  if (r.code !== 0) {
    throw new StrataError(COMPOSE_ERR.EXEC_SETUP, `cannot mount ${name}: ${kernelMessage ?? r.message}`, {
      hint: `is it a ${format === 'squashfs' ? 'SquashFS' : 'EROFS'} image strata or mk${format === 'squashfs' ? 'squashfs' : 'fs.erofs'} wrote, whole and readable?`,
    });
  }
  return mounted(dir, fuse, fusermount, ['-u'], ['-u', '-z']);
}

function mounted(dir: string, via: MountedImage['via'], tool: string, args: string[], lazy: string[]): MountedImage {
  return {
    dir,
    via,
    async unmount() {
      if ((await runTool(tool, [...args, dir])).code === 0) return undefined;
      const r = await runTool(tool, [...lazy, dir]);
      return r.code === 0 ? undefined : `could not unmount ${printable(dir)}: ${r.message}`;
    },
  };
}

function openToCaller(dev: string): boolean {
  try {
    fs.accessSync(dev, fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
