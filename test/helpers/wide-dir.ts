/**
 * A directory wider than the image writers keep as objects (compose/image/shared/wide-list.ts):
 * 9,000 files whose names differ in length (many listing runs, index entries, directory
 * blocks), with two subdirectories among them, and what every reader must find in it.
 */
import * as assert from 'uvu/assert';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export const WIDE_FILES = 9000;

/** The files of `w/`, in no particular order: [path, content]. */
export function wideFiles(): Array<[string, Buffer]> {
  return Array.from({ length: WIDE_FILES }, (_, i) => [`w/${'n'.repeat(i % 40)}-${String(i).padStart(4, '0')}`, Buffer.from(`file ${i}\n`)]);
}

/** The subdirectories of `w/` (one sorts among the files, one after them) and the file below the first. */
export const WIDE_DIRS = ['w/sub-0100', 'w/sub-8999'];
export const WIDE_INSIDE: [string, Buffer] = ['w/sub-0100/inside', Buffer.from('below a subdirectory in the middle\n')];

/** A kernel mount at `mnt` and an image reader both find each name of `w/` and none other. */
export async function assertWideLookups(mnt: string, image: { stat(path: string): Promise<{ size: number } | undefined>; close(): Promise<void> }): Promise<void> {
  assert.is(readdirSync(join(mnt, 'w')).length, WIDE_FILES + WIDE_DIRS.length);
  for (const n of ['-0000', `${'n'.repeat(39)}-8999`, 'sub-8999']) assert.ok(existsSync(join(mnt, 'w', n)), n);
  for (const n of ['-9000', 'n-0000', 'sub-9000']) assert.not.ok(existsSync(join(mnt, 'w', n)), n);
  try {
    assert.is((await image.stat(`w/${'n'.repeat(20)}-4460`))?.size, 10);
    assert.is(await image.stat('w/n-0002'), undefined);
  } finally {
    await image.close();
  }
}
