/**
 * The module hierarchy, Lmod's compiler → MPI → library layout, without a MODULEPATH.
 *
 * A module built under parents (`store import hdf5/1.14 DIR --under gcc/12.2 --under
 * mpi/openmpi-4.1`) lives at a level named by its parents, `gcc/12.2/mpi/openmpi-4.1`; a module
 * without parents lives at the core level ''. Every loaded (active) module opens the level named
 * by its own parents followed by its own fullName (its store name), as a Lmod compiler module
 * prepends its directory to MODULEPATH. A module is visible when its level is open. Levels are
 * searched newest first, the core last (Lmod: a prepended directory comes before the older
 * ones), and when two visible levels hold the same fullName the first one searched wins.
 *
 * Pure: nothing here does I/O. Rules and their Lmod counterparts: spec/compose.md.
 */
import { keyOf, type ModuleInfo } from './resolve.js';

/** The level a module lives at: its parents joined by '/', '' for the core. */
export function levelOf(m: Pick<ModuleInfo, 'parents'>): string {
  return (m.parents ?? []).join('/');
}

/** The levels open for these active modules (in load order), newest first, the core last. */
export function openLevels(active: readonly Pick<ModuleInfo, 'key' | 'fullName'>[]): string[] {
  const out: string[] = [];
  for (let i = active.length - 1; i >= 0; i--) {
    const lv = keyOf(active[i]!);
    if (!out.includes(lv)) out.push(lv);
  }
  out.push('');
  return out;
}

/** One open level and the modules it holds that are visible from it. */
export interface Level {
  /** '' for the core. */
  level: string;
  modules: ModuleInfo[];
}

/**
 * The visible modules, level by level in search order (newest level first, the core last). A
 * fullName already visible from an earlier level is left out of later ones.
 */
export function visibleLevels(available: readonly ModuleInfo[], active: readonly Pick<ModuleInfo, 'key' | 'fullName'>[]): Level[] {
  const byLevel = new Map<string, ModuleInfo[]>();
  for (const m of available) {
    const lv = levelOf(m);
    const list = byLevel.get(lv);
    if (list) list.push(m);
    else byLevel.set(lv, [m]);
  }
  const seen = new Set<string>();
  const out: Level[] = [];
  for (const level of openLevels(active)) {
    const mods = (byLevel.get(level) ?? []).filter((m) => !seen.has(m.fullName));
    for (const m of mods) seen.add(m.fullName);
    if (mods.length > 0 || level === '') out.push({ level, modules: mods });
  }
  return out;
}

/** The visible modules, in search order. */
export function visibleModules(available: readonly ModuleInfo[], active: readonly Pick<ModuleInfo, 'key' | 'fullName'>[]): ModuleInfo[] {
  return visibleLevels(available, active).flatMap((l) => l.modules);
}

/**
 * What must be loaded before `m` is visible, as Lmod's spider says it: for a module at the core,
 * nothing (an empty list); else its parents, outermost first. A parent is named by its
 * fullName (gcc/12.2, mpi/openmpi-4.1), as users load it.
 */
export function loadFirst(m: Pick<ModuleInfo, 'parents'>): string[] {
  return [...(m.parents ?? [])];
}

/**
 * Whether the parents of `m` can all be reached from the core: each parent exists at the level
 * its predecessors open. A build whose parents are not in the store cannot be loaded; spider
 * still lists it with the parents it needs.
 */
export function reachable(m: ModuleInfo, available: readonly ModuleInfo[]): boolean {
  const parents = m.parents ?? [];
  for (let i = 0; i < parents.length; i++) {
    const level = parents.slice(0, i).join('/');
    if (!available.some((p) => p.fullName === parents[i] && levelOf(p) === level)) return false;
  }
  return true;
}
