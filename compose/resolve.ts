/**
 * Module resolution with Lmod's rules: what a spec a user (or a module's requires) typed names,
 * among the modules visible now. Pure: the caller supplies the modules; nothing here does I/O.
 * Visibility (the hierarchy) is compose/hierarchy.ts; the views (avail, spider, …) are
 * compose/views.ts. The rules are written down in spec/compose.md.
 */
import { StrataError, COMPOSE_ERR } from './errors.js';
import { compareVersionsStrict, splitFullName } from './version-order.js';
import { lookupGroup } from '../native/ids.js';

/** One importable module as the composer sees it: a module record plus its index state. */
export interface ModuleInfo {
  /**
   * The store name (index key): fullName, behind its hierarchy parents when it has some
   * (`gcc/12.2/mpi/openmpi-4.1/hdf5/1.14`). Absent means the same as fullName.
   */
  key?: string;
  /** `name/version` as users write it (Lmod rule: the last component is the version). */
  fullName: string;
  name: string;
  /** '' for a single-component fullName. */
  version: string;
  /** CID of the module record. */
  record: string;
  /** Specs this module needs loaded (Lmod depends_on): loaded for you when missing. */
  requires: string[];
  /** Specs that may not be loaded together with this module. */
  conflicts: string[];
  /** At most one loaded module per family (Lmod `family()`). */
  family: string | null;
  /** Group whose members (and root) may load the module; null = everyone. */
  restricted: string | null;
  /** Marked default in the index (`strata store default`), within its hierarchy level. */
  isDefault: boolean;
  description?: string;
  /** The modules, outermost first, that must be loaded for this build to be visible. */
  parents?: string[];
  /** Left out of avail, spider and default resolution; loadable by exact name. */
  hidden?: boolean;
  /** purge/unload keep it unless forced. */
  sticky?: boolean;
  /** Lmod whatis() lines beyond the description. */
  whatis?: string[];
  keywords?: string[];
  /** Specs that must be loaded already (Lmod prereq). */
  prereq?: string[];
  /** Groups of alternatives (Lmod load_any). */
  loadAny?: string[][];
}

/** The store name of a module (its key; fullName when it has no parents). */
export function keyOf(m: Pick<ModuleInfo, 'key' | 'fullName'>): string {
  return m.key ?? m.fullName;
}

/** Who is composing. uid 0 may load every module. */
export interface User {
  name: string;
  uid: number;
  /** The gids of the user's credentials, as decimal text (a group name also counts as itself). */
  groups: string[];
}

/** Lmod's prefix of the errors it reports through LmodError. */
export const LMOD_ERROR = 'Lmod has detected the following error: ';

export function normalizeSpec(spec: string): string {
  return spec.trim().replace(/\/+$/, '');
}

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Whether version `v` is in the partial version `p` (Lmod's extended default): `12` holds 12.3 and 12-x, not 123. */
function inPartial(v: string, p: string): boolean {
  return p !== '' && (v.startsWith(p + '.') || v.startsWith(p + '-'));
}

/**
 * Whether a loaded module is what `spec` names for unload and conflict: its name or its exact
 * fullName. A partial version (`gcc/12` for gcc/12.3) names nothing loaded, as in Lmod.
 */
export function namesLoaded(spec: string, m: Pick<ModuleInfo, 'fullName' | 'name'>): boolean {
  const s = normalizeSpec(spec);
  return s !== '' && (s === m.name || s === m.fullName);
}

/**
 * Whether `spec` could name `m` at all: its fullName, its name, or a partial version of it.
 * Used to tell which modules a spec is about (spider, collections), never to pick one.
 */
export function matchesSpec(spec: string, m: Pick<ModuleInfo, 'fullName' | 'name' | 'version'>): boolean {
  const s = normalizeSpec(spec);
  if (s === '') return false;
  if (s === m.fullName || s === m.name) return true;
  const { name, version } = splitFullName(s);
  return name === m.name && inPartial(m.version, version);
}

/**
 * The name (Lmod's sn) a spec is about: the spec itself when some module has that name, else
 * the part before its last '/'. Requirement reference counts go by this name.
 */
export function snOf(spec: string, available: readonly Pick<ModuleInfo, 'name'>[]): string {
  const s = normalizeSpec(spec);
  if (available.some((m) => m.name === s)) return s;
  return splitFullName(s).name;
}

/** The modules named `name`, oldest version first (Lmod's version order). */
export function versionsOf(name: string, available: readonly ModuleInfo[]): ModuleInfo[] {
  return available.filter((m) => m.name === name).sort((a, b) => compareVersionsStrict(a.version, b.version));
}

/** Lmod's choice among candidates of one name: a marked default wins, else the highest version. */
function best(cands: readonly ModuleInfo[]): ModuleInfo | undefined {
  const marked = cands.filter((m) => m.isDefault);
  const pool = marked.length > 0 ? marked : cands;
  let top: ModuleInfo | undefined;
  for (const m of pool) if (top === undefined || compareVersionsStrict(m.version, top.version) > 0) top = m;
  return top;
}

/** The default of a name among `available`: its marked default, else its highest version; hidden versions never. */
export function defaultOf(name: string, available: readonly ModuleInfo[]): ModuleInfo | undefined {
  return best(available.filter((m) => m.name === name && !m.hidden));
}

/** Lmod's e_Failed_Load wording for specs that name nothing. */
export function unknownModules(specs: readonly string[]): StrataError {
  const list = specs.map((s) => `"${s}"`).join(' ');
  const first = splitFullName(normalizeSpec(specs[0] ?? '')).name || specs[0] || '';
  return new StrataError(COMPOSE_ERR.NOT_FOUND, `${LMOD_ERROR}The following module(s) are unknown: ${list}`, {
    hint: `Please check the spelling or version number. Also try "strata compose spider ${first}"`,
  });
}

/** Lmod's e_Failed_Load_2: modules that exist in the hierarchy but are not visible now. */
export function notLoadableHere(specs: readonly string[]): StrataError {
  const list = specs.map((s) => `"${s}"`).join(' ');
  return new StrataError(COMPOSE_ERR.NOT_FOUND, `${LMOD_ERROR}These module(s) or extension(s) exist but cannot be loaded as requested: ${list}`, {
    hint: `Try: "strata compose spider ${specs.map(normalizeSpec).join(' ')}" to see how to load the module(s).`,
  });
}

/**
 * Resolves what a user typed to one module among `visible`, in Lmod's order:
 *  1. an exact fullName (hidden modules too);
 *  2. a name: its marked default, else its highest version (hidden versions never);
 *  3. `name/P`, a partial version: the marked default among versions `P.…`/`P-…`, else the
 *     highest of them.
 * A leading part of a longer name (`tools` for tools/a/2.0) names nothing, as in Lmod.
 * Returns undefined when nothing matches.
 */
export function findSpec(spec: string, visible: readonly ModuleInfo[]): ModuleInfo | undefined {
  const s = normalizeSpec(spec);
  if (s === '') return undefined;
  const exact = visible.find((m) => m.fullName === s);
  if (exact) return exact;
  const byName = defaultOf(s, visible);
  if (byName) return byName;
  const { name, version } = splitFullName(s);
  return best(visible.filter((m) => m.name === name && !m.hidden && inPartial(m.version, version)));
}

/**
 * findSpec or Lmod's error: e_Failed_Load_2 when the spec names a module of the whole store
 * (`all`) that is not visible now (a hierarchy build whose parents are not loaded), else the
 * "unknown" error.
 */
export function resolveSpec(spec: string, visible: readonly ModuleInfo[], all: readonly ModuleInfo[] = visible): ModuleInfo {
  const m = findSpec(spec, visible);
  if (m) return m;
  throw whyNotFound([spec], all);
}

/** The error for specs findSpec did not resolve: exists elsewhere in the hierarchy, or unknown. */
export function whyNotFound(specs: readonly string[], all: readonly ModuleInfo[]): StrataError {
  const elsewhere = specs.filter((s) => findSpec(s, all.filter((m) => !m.hidden || m.fullName === normalizeSpec(s))) !== undefined);
  if (elsewhere.length === specs.length) return notLoadableHere(specs);
  return unknownModules(specs.filter((s) => !elsewhere.includes(s)));
}

/** Whether `user` may load `m`: unrestricted, root, or a member of its group. */
export function mayLoad(m: Pick<ModuleInfo, 'restricted'>, user: User): boolean {
  if (m.restricted === null || user.uid === 0 || user.groups.includes(m.restricted)) return true;
  const gid = lookupGroup(m.restricted);
  return gid !== undefined && user.groups.includes(String(gid));
}

/** Throws ERR_ACCESS_DENIED with Lmod's e_Forbidden wording unless `user` may load `m`. */
export function checkAccess(m: Pick<ModuleInfo, 'fullName' | 'restricted'>, user: User): void {
  if (mayLoad(m, user)) return;
  throw new StrataError(COMPOSE_ERR.ACCESS_DENIED, `Access to ${m.fullName} is denied`, {
    hint: `it is restricted to members of group "${m.restricted}"; ask your site staff for access`,
  });
}

/** Available modules sorted as avail lists them: names in byte order, then version order. */
export function sortForListing(available: readonly ModuleInfo[]): ModuleInfo[] {
  return [...available].sort((a, b) => byteCompare(a.name, b.name) || compareVersionsStrict(a.version, b.version));
}

export { byteCompare };
