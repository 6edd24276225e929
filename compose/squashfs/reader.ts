/**
 * The SquashFS reader moved to compose/image/squashfs/reader.ts. This forward keeps the
 * extractor (compose/squashfs/extract.ts) and compose/unsquash.ts, which belong to the tree
 * writer's rework, building until they import compose/image/ themselves; then delete it.
 */
export { SquashfsImage, q, type ImageEntry, type Extent, type WalkOptions } from '../image/squashfs/reader.js';
