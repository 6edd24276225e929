/**
 * Module resolution with Lmod's rules, and the avail/spider views of the available set.
 * Pure: the caller (store/CLI) supplies the available modules; nothing here does I/O.
 * The rules are written down in spec/compose.md.
 */
import { StrataError, COMPOSE_ERR } from './errors.js';
import { compareVersionsStrict, splitFullName } from './version-order.js';

/** One importable module as the composer sees it: a module record plus its index state. */
export interface ModuleInfo {
  /** `name/version` (Lmod rule: the last component is the version). */
  fullName: string;
  name: string;
  /** '' for a single-component fullName. */
  version: string;
  /** CID of the module record. */
  record: string;
  /** Specs (fullNames, bare names or partial versions) this module needs loaded. */
  requires: string[];
  /** Specs that may not be loaded together with this module. */
  conflicts: string[];
  /** At most one loaded module per family (Lmod `family()`). */
  family: string | null;
  /** Group whose members (and root) may load the module; null = everyone. */
  restricted: string | null;
  /** Marked default in the index (`strata store default`). */
  isDefault: boolean;
  description?: string;
}

/** Who is composing. uid 0 may load every module. */
export interface User {
  name: string;
  uid: number;
  groups: string[];
}

function normalizeSpec(spec: string): string {
  return spec.trim().replace(/\/+$/, '');
}

/**
 * Whether `spec` names module `m`: its fullName; its bare name (any version); a partial
 * version `name/P` matching versions `P.…` or `P-…` (Lmod's extended default: `abc/1`
 * matches abc/1.2 and abc/1-x, not abc/17); or a leading part of the name at a '/'
 * (`foo` names foo/3/2). Used for requires, conflicts, rm and swap alike.
 */
export function matchesSpec(spec: string, m: Pick<ModuleInfo, 'fullName' | 'name' | 'version'>): boolean {
  const s = normalizeSpec(spec);
  if (s === '' ) return false;
  if (s === m.fullName || s === m.name) return true;
  const { name, version: partial } = splitFullName(s);
  if (name === m.name && partial !== '' && (m.version.startsWith(partial + '.') || m.version.startsWith(partial + '-'))) {
    return true;
  }
  return m.fullName.startsWith(s + '/');
}

/** The modules named `name`, oldest version first (Lmod's version order). */
export function versionsOf(name: string, available: readonly ModuleInfo[]): ModuleInfo[] {
  return available.filter((m) => m.name === name).sort((a, b) => compareVersionsStrict(a.version, b.version));
}

/** Components after `prefix/` compared one by one in version order. */
function compareTail(prefix: string, a: ModuleInfo, b: ModuleInfo): number {
  const ta = a.fullName.slice(prefix.length).split('/');
  const tb = b.fullName.slice(prefix.length).split('/');
  for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
    const c = compareVersionsStrict(ta[i]!, tb[i]!);
    if (c !== 0) return c;
  }
  return ta.length - tb.length;
}

/** Lmod's choice among candidates: a marked default wins, else the highest version. */
function best(cands: readonly ModuleInfo[], prefix: string): ModuleInfo | undefined {
  const marked = cands.filter((m) => m.isDefault);
  const pool = marked.length > 0 ? marked : cands;
  let top: ModuleInfo | undefined;
  for (const m of pool) if (top === undefined || compareTail(prefix, m, top) > 0) top = m;
  return top;
}

/** The default of a name: its marked default, else its highest version; undefined if none. */
export function defaultOf(name: string, available: readonly ModuleInfo[]): ModuleInfo | undefined {
  return best(available.filter((m) => m.name === name), name);
}

/** Lmod's e_Failed_Load wording for specs that name nothing. */
export function unknownModules(specs: readonly string[]): StrataError {
  const list = specs.map((s) => `"${s}"`).join(' ');
  const first = splitFullName(normalizeSpec(specs[0] ?? '')).name || specs[0] || '';
  return new StrataError(COMPOSE_ERR.NOT_FOUND, `The following module(s) are unknown: ${list}`, {
    hint: `Please check the spelling or version number. Also try "strata compose spider ${first}"`,
  });
}

/**
 * Resolves what a user typed to one module, in Lmod's order:
 *  1. an exact fullName;
 *  2. a bare name: its marked default, else its highest version;
 *  3. `name/P`, a partial version: the marked default among versions `P.…`/`P-…`, else
 *     the highest of them;
 *  4. a leading part of names (`foo` for foo/3/2): marked default, else highest,
 *     comparing the remaining components in version order.
 * Throws ERR_NOT_FOUND with Lmod's "The following module(s) are unknown" wording.
 */
export function resolveSpec(spec: string, available: readonly ModuleInfo[]): ModuleInfo {
  const s = normalizeSpec(spec);
  const exact = available.find((m) => m.fullName === s);
  if (exact) return exact;
  const byName = defaultOf(s, available);
  if (byName) return byName;
  const { name, version: partial } = splitFullName(s);
  if (partial !== '') {
    const ext = available.filter(
      (m) => m.name === name && (m.version.startsWith(partial + '.') || m.version.startsWith(partial + '-')),
    );
    const pick = best(ext, name);
    if (pick) return pick;
  }
  const under = best(available.filter((m) => m.fullName.startsWith(s + '/')), s);
  if (under && s !== '') return under;
  throw unknownModules([spec]);
}

/** Whether `user` may load `m`: unrestricted, root, or a member of its group. */
export function mayLoad(m: Pick<ModuleInfo, 'restricted'>, user: User): boolean {
  return m.restricted === null || user.uid === 0 || user.groups.includes(m.restricted);
}

/** Throws ERR_ACCESS_DENIED with Lmod's e_Forbidden wording unless `user` may load `m`. */
export function checkAccess(m: ModuleInfo, user: User): void {
  if (mayLoad(m, user)) return;
  throw new StrataError(COMPOSE_ERR.ACCESS_DENIED, `Access to ${m.fullName} is denied`, {
    hint: `it is restricted to members of group "${m.restricted}"; ask your site staff for access`,
  });
}

// ---------------------------------------------------------------------------------------
// avail / spider

/** Lmod's avail message when nothing matches. */
export const NO_MODULES_FOUND = 'No module(s) or extension(s) found!';

export interface AvailOptions {
  /** Terminal width for the column layout (Lmod: the terminal's). Default 80. */
  width?: number;
  /** Title of the block, where Lmod prints the MODULEPATH directory. */
  label?: string;
}

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Available modules sorted as avail lists them: names in byte order, then version order. */
export function sortForListing(available: readonly ModuleInfo[]): ModuleInfo[] {
  return [...available].sort((a, b) => byteCompare(a.name, b.name) || compareVersionsStrict(a.version, b.version));
}

function matchesPattern(m: ModuleInfo, pattern: string | undefined): boolean {
  if (pattern === undefined || pattern === '') return true;
  return m.fullName.toLowerCase().includes(pattern.toLowerCase());
}

/** The modules `avail PATTERN` lists, in listing order. */
export function availMatching(available: readonly ModuleInfo[], pattern?: string): ModuleInfo[] {
  return sortForListing(available).filter((m) => matchesPattern(m, pattern));
}

const LEGEND: Record<string, string> = {
  D: 'Default Module',
  L: 'Module is loaded',
  R: 'Restricted to members of a group',
};

/** Column-major table as Lmod's ColumnTable lays it out: names padded, markers aligned. */
function columns(cells: Array<[string, string]>, width: number): string[] {
  const indent = '   ';
  const gap = 4;
  const cellText = (col: Array<[string, string]>): string[] => {
    const w = Math.max(...col.map(([n]) => n.length));
    const hasMark = col.some(([, k]) => k !== '');
    return col.map(([n, k]) => (hasMark ? `${n.padEnd(w)} ${k}` : n));
  };
  let chosen: string[][] = [cellText(cells)];
  for (let ncol = cells.length; ncol >= 1; ncol--) {
    const rows = Math.ceil(cells.length / ncol);
    const cols: string[][] = [];
    for (let c = 0; c * rows < cells.length; c++) cols.push(cellText(cells.slice(c * rows, (c + 1) * rows)));
    const widths = cols.map((col) => Math.max(...col.map((s) => s.length)));
    const total = indent.length + widths.reduce((a, b) => a + b, 0) + gap * (cols.length - 1);
    if (total < width || ncol === 1) {
      chosen = cols;
      break;
    }
  }
  const widths = chosen.map((col) => Math.max(...col.map((s) => s.length)));
  const rows = chosen[0]!.length;
  const out: string[] = [];
  for (let r = 0; r < rows; r++) {
    let line = indent;
    for (let c = 0; c < chosen.length; c++) {
      const s = chosen[c]![r];
      if (s === undefined) continue;
      line += c === chosen.length - 1 || chosen[c + 1]![r] === undefined ? s : s.padEnd(widths[c]! + gap);
    }
    out.push(line.trimEnd());
  }
  return out;
}

/**
 * `strata compose avail [PATTERN]` as Lmod prints `module avail`: a dashed title, the
 * matching modules in columns (names in byte order, versions in version order), markers
 * after the name and a legend of the markers used:
 *   (D) the default of a name that has more than one version (Lmod shows D only then),
 *   (L) in the stack, (R) restricted to a group. Several join as Lmod does: (R,L,D).
 * PATTERN matches case-insensitively anywhere in the fullName. No match gives Lmod's
 * "No module(s) or extension(s) found!".
 */
export function formatAvail(
  available: readonly ModuleInfo[],
  loaded: { modules: ReadonlyArray<{ fullName: string }> },
  pattern?: string,
  opts: AvailOptions = {},
): string[] {
  const width = opts.width ?? 80;
  const label = opts.label ?? 'strata store';
  const shown = availMatching(available, pattern);
  if (shown.length === 0) return [NO_MODULES_FOUND];
  const inStack = new Set(loaded.modules.map((e) => e.fullName));
  const byName = new Map<string, ModuleInfo[]>();
  for (const m of available) {
    const list = byName.get(m.name);
    if (list) list.push(m);
    else byName.set(m.name, [m]);
  }
  const defaults = new Set<ModuleInfo>();
  for (const [name, all] of byName) if (all.length > 1) defaults.add(best(all, name)!);
  const used = new Set<string>();
  const cells: Array<[string, string]> = shown.map((m) => {
    const marks: string[] = [];
    if (m.restricted !== null) marks.push('R');
    if (inStack.has(m.fullName)) marks.push('L');
    if (defaults.has(m)) marks.push('D');
    for (const k of marks) used.add(k);
    return [m.fullName, marks.length > 0 ? `(${marks.join(',')})` : ''];
  });
  const dashes = Math.max(width - label.length - 3, 4);
  const left = Math.floor(dashes / 2);
  const lines = [`${'-'.repeat(left)} ${label} ${'-'.repeat(dashes - left)}`, ...columns(cells, width)];
  if (used.size > 0) {
    lines.push('', '  Where:');
    for (const k of [...used].sort()) lines.push(`   ${k}:  ${LEGEND[k]}`);
  }
  return lines;
}

export interface SpiderEntry {
  name: string;
  /** fullNames, oldest first. */
  versions: string[];
  /** fullName of the default version. */
  default: string;
  /** From the default version, else the newest one that has a description. */
  description?: string;
}

/**
 * `strata compose spider PATTERN`: the names whose name or any fullName contains PATTERN
 * (case-insensitive), each with all its versions. Names in byte order. Empty when nothing
 * matches (the CLI prints Lmod's "No matching modules found.").
 */
export function spider(available: readonly ModuleInfo[], pattern: string): SpiderEntry[] {
  const names = [...new Set(available.filter((m) => matchesPattern(m, pattern)).map((m) => m.name))].sort(byteCompare);
  return names.map((name) => {
    const vs = versionsOf(name, available);
    const dflt = defaultOf(name, available)!;
    const described = [dflt, ...[...vs].reverse()].find((m) => m.description);
    const e: SpiderEntry = { name, versions: vs.map((m) => m.fullName), default: dflt.fullName };
    if (described?.description) e.description = described.description;
    return e;
  });
}
