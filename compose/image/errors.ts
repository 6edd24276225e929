/**
 * Codes of the errors the image library (compose/image/) raises. The library knows
 * nothing of modules: its messages name images, paths inside them and options.
 */
import { StrataError, isStrataError } from '../../native/errors.js';
export { StrataError, isStrataError };

export const IMAGE_ERR = {
  /** Bytes that do not form a valid image (or a valid part of one). */
  CORRUPT: 'ERR_IMAGE_CORRUPT',
  /** A valid image using a feature strata does not read (a compressor, a format version). */
  UNSUPPORTED: 'ERR_IMAGE_UNSUPPORTED',
  /** Writer options out of range (compressor, level, block size, workers). */
  OPTIONS: 'ERR_IMAGE_OPTIONS',
  /** Entries a writer cannot store (duplicate path, name too long, content of the wrong size). */
  INPUT: 'ERR_IMAGE_INPUT',
  /** A path that is not in the image, or not of the kind asked for. */
  NOT_FOUND: 'ERR_NOT_FOUND',
  /** A file too large to read whole (stream it instead). */
  TOO_LARGE: 'ERR_IMAGE_TOO_LARGE',
  /**
   * A cached segment whose bytes were not what it sealed, found once they were copied into the
   * image (SquashfsWriter.finish): the segment is gone, the image must be built without using
   * segments (compose/squash.ts does so at once).
   */
  SEGMENT_DAMAGED: 'ERR_SEGMENT_DAMAGED',
} as const;
