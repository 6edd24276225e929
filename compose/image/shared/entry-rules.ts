/**
 * What both image writers refuse of an entry as it is added, before anything of it is
 * written: the checks one entry allows alone (its type, the root, a link's target, its name's
 * length in the format). The tree as a whole (parents, duplicates, what links point at) is
 * checked when the writer finishes, by each format's own pass.
 */
import { baseName, type LayerEntry } from '../../../store/index.js';
import { IMAGE_ERR, StrataError } from '../errors.js';

/** An entry or call the writer cannot take: ERR_IMAGE_INPUT. */
export const inputError = (msg: string, hint?: string): StrataError => new StrataError(IMAGE_ERR.INPUT, msg, hint ? { hint } : {});

/** Throws ERR_IMAGE_INPUT when the last component of `entry`'s path is longer than `nameMax` bytes. */
export function checkName(entry: LayerEntry, nameMax: number): void {
  const name = entry.path === '.' ? '.' : baseName(entry.path);
  if (Buffer.byteLength(name) > nameMax) throw inputError(`name longer than ${nameMax} bytes: ${entry.path}`);
}

/** Throws ERR_IMAGE_INPUT for an entry addFile cannot take: not a regular file, the root, a name too long for the format. */
export function checkFileEntry(entry: LayerEntry, nameMax: number): void {
  if (entry.type !== 'file') throw inputError(`addFile needs a regular file, got ${entry.type}: ${entry.path}`);
  if (entry.path === '.') throw inputError('the image root must be a directory');
  checkName(entry, nameMax);
}

/**
 * Throws ERR_IMAGE_INPUT for an entry addEntry cannot take: a regular file (those go through
 * addFile), a type no image holds, a root that is not a directory, a symlink or hard link
 * without a target, a name too long for the format.
 */
export function checkOtherEntry(entry: LayerEntry, nameMax: number): void {
  switch (entry.type) {
    case 'dir':
    case 'symlink':
    case 'char':
    case 'block':
    case 'fifo':
    case 'hardlink':
      break;
    case 'file':
      throw inputError(`regular files go through addFile: ${entry.path}`);
    default:
      throw inputError(`unsupported entry type ${String(entry.type)}: ${entry.path}`);
  }
  if (entry.path === '.' && entry.type !== 'dir') throw inputError('the image root must be a directory');
  if ((entry.type === 'symlink' || entry.type === 'hardlink') && !entry.linkname) {
    throw inputError(`${entry.type} without a target: ${entry.path}`);
  }
  checkName(entry, nameMax);
}
