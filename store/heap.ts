/**
 * How much the V8 heap may grow past its live data, for builds of many entries.
 *
 * V8 sets the next full collection at a multiple of the heap it found live, a factor it picks
 * up to 4 when the program allocates fast, which a build does: at a million entries the heap
 * held 100–150 MiB for 12–25 MiB of live objects, a third of the process's peak. Past
 * LARGE_PLAN entries a build asks for at most half again its live size instead (V8's
 * --heap-growing-percent, which V8 reads at every collection, so it takes effect when set
 * late). Measured on the 1,000,000-file scale stack: EROFS 224 MiB instead of 298–331, SquashFS
 * 261 MiB instead of 299–314, in the same time. Smaller builds keep V8's own choice: on the
 * 17,000-entry bench stack the setting bought no memory and cost about 4 % of the time.
 *
 * The merges ask for it as soon as their layers have given LARGE_PLAN entries (compose/merge.ts
 * for outputs, sources/oci.ts for an image's layers), not once the plan is made: making it is
 * when the heap grows fastest, and the sandbox of the 1,000,000-file stack peaked there, at
 * 230–284 MiB, with the setting made after it.
 */
import { setFlagsFromString } from 'node:v8';

/** Entries of a plan past which a build keeps its heap near its live size. */
export const LARGE_PLAN = 50_000;

let set = false;

/** Limits the heap's growth for the rest of the process (once): the plan is large. */
export function fitHeapToPlan(): void {
  if (set) return;
  set = true;
  try {
    setFlagsFromString('--heap-growing-percent=50');
  } catch {
    // A V8 that refuses flags after start keeps its own growth: only memory is at stake.
  }
}
