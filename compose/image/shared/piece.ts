/**
 * A piece of a regular file's content as both image readers give it (contentPieces), in file
 * order: `length` bytes at `offset`, as `data`, or a hole of `length` zero bytes when `data` is
 * absent. `data` may be a view of a decoded block the reader keeps: read it, copy what is
 * kept, never write to it.
 */
export interface Piece {
  offset: number;
  length: number;
  data?: Buffer;
}
