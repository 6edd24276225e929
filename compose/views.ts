/**
 * What the read-only verbs print, in Lmod's layout: avail, spider, whatis, keyword, list, show,
 * overview, savelist, describe, each with its terse (-t) form. Pure: each takes the modules
 * and the stack and returns lines; the CLI prints them. Wording and layout: spec/compose.md.
 */
import { StrataError, COMPOSE_ERR } from './errors.js';
import { levelOf, loadFirst, reachable, visibleLevels, type Level } from './hierarchy.js';
import { byteCompare, defaultOf, keyOf, LMOD_ERROR, normalizeSpec, sortForListing, versionsOf, type ModuleInfo } from './resolve.js';
import type { StackFile } from './stack.js';
import { splitFullName } from './version-order.js';

/** Lmod's avail message when nothing matches. */
export const NO_MODULES_FOUND = 'No module(s) or extension(s) found!';

export interface ViewOptions {
  /** Lmod -t: one item a line, for scripts. */
  terse?: boolean;
  /** Lmod --show_hidden: hidden modules too, marked (H). */
  showHidden?: boolean;
  /** Terminal width for column layouts (Lmod: the terminal's). Default 80. */
  width?: number;
}

/** The title of a hierarchy level: what must be loaded for it ('' is the store's core). */
export function levelLabel(level: string): string {
  return level === '' ? 'strata store' : level;
}

/**
 * Whether `pattern` selects fullName: a case-insensitive substring (Lmod's avail search), or,
 * when it holds `*` or `?`, a glob on the whole fullName (`mpi*` matches mpi/openmpi-4.1 and mpich/3).
 */
export function patternMatches(fullName: string, pattern: string | undefined): boolean {
  if (pattern === undefined || pattern === '') return true;
  const p = pattern.toLowerCase();
  const f = fullName.toLowerCase();
  if (!/[*?]/.test(p)) return f.includes(p);
  const re = new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(f);
}

/** Column-major table as Lmod's ColumnTable lays it out. */
function columns(cells: string[], width: number, indent = '   ', gap = 4): string[] {
  if (cells.length === 0) return [];
  let chosen: string[][] = [cells];
  for (let ncol = cells.length; ncol >= 1; ncol--) {
    const rows = Math.ceil(cells.length / ncol);
    const cols: string[][] = [];
    for (let c = 0; c * rows < cells.length; c++) cols.push(cells.slice(c * rows, (c + 1) * rows));
    const widths = cols.map((col) => Math.max(...col.map((s) => s.length)));
    const total = indent.length + widths.reduce((a, b) => a + b, 0) + gap * (cols.length - 1);
    if (total < width || ncol === 1) {
      chosen = cols;
      break;
    }
  }
  const widths = chosen.map((col) => Math.max(...col.map((s) => s.length)));
  const out: string[] = [];
  for (let r = 0; r < chosen[0]!.length; r++) {
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
 * Name + marker cells in columns, names padded within each column so the markers line up, as
 * Lmod's ColumnTable lays out avail and overview: as many columns as fit in `width`.
 */
function pairColumns(cells: Array<[string, string]>, width: number, indent = '   ', gap = 4): string[] {
  if (cells.length === 0) return [];
  const layout = (ncol: number) => {
    const rows = Math.ceil(cells.length / ncol);
    const cols: string[][] = [];
    for (let c = 0; c * rows < cells.length; c++) {
      const col = cells.slice(c * rows, (c + 1) * rows);
      const w = Math.max(...col.map(([n]) => n.length));
      cols.push(col.map(([n, k]) => (k ? `${n.padEnd(w)} ${k}` : n)));
    }
    return cols;
  };
  let cols = layout(1);
  for (let ncol = cells.length; ncol >= 1; ncol--) {
    const cand = layout(ncol);
    const total = indent.length + cand.reduce((a, col) => a + Math.max(...col.map((x) => x.length)), 0) + gap * (cand.length - 1);
    if (total < width || ncol === 1) {
      cols = cand;
      break;
    }
  }
  const widths = cols.map((col) => Math.max(...col.map((x) => x.length)));
  const out: string[] = [];
  for (let r = 0; r < cols[0]!.length; r++) {
    let line = indent;
    for (let c = 0; c < cols.length; c++) {
      const x = cols[c]![r];
      if (x === undefined) continue;
      line += c === cols.length - 1 || cols[c + 1]![r] === undefined ? x : x.padEnd(widths[c]! + gap);
    }
    out.push(line.trimEnd());
  }
  return out;
}

function dashedTitle(label: string, width: number): string {
  const dashes = Math.max(width - label.length - 3, 4);
  const left = Math.floor(dashes / 2);
  return `${'-'.repeat(left)} ${label} ${'-'.repeat(dashes - left)}`;
}

const LEGEND: Record<string, string> = {
  D: 'Default Module',
  H: 'Hidden Module',
  L: 'Module is loaded',
  R: 'Restricted to members of a group',
  S: 'Module is Sticky, requires --force to unload or purge',
};

function legend(used: Set<string>): string[] {
  if (used.size === 0) return [];
  return ['', '  Where:', ...[...used].sort().map((k) => `   ${k}:  ${LEGEND[k]}`)];
}

/** The levels avail shows: visible modules matching the pattern, hidden ones only when asked. */
export function availLevels(available: readonly ModuleInfo[], stack: StackFile, pattern?: string | readonly string[], opts: ViewOptions = {}): Level[] {
  const pats = pattern === undefined ? [] : typeof pattern === 'string' ? [pattern] : pattern;
  const wanted = (m: ModuleInfo) => pats.length === 0 || pats.some((p) => patternMatches(m.fullName, p));
  const active = stack.modules.filter((e) => !e.inactive).map((e) => ({ key: e.key ?? e.fullName, fullName: e.fullName }));
  return visibleLevels(available, active)
    .map((l) => ({ level: l.level, modules: sortForListing(l.modules.filter((m) => (opts.showHidden || !m.hidden) && wanted(m))) }))
    .filter((l) => l.modules.length > 0);
}

/** Terse listing of modules: `name/` before the versions of each name, as Lmod's -t prints them. */
function terseNames(mods: readonly ModuleInfo[], withNames = true): string[] {
  if (!withNames) return mods.map((m) => m.fullName);
  const out: string[] = [];
  let last: string | undefined;
  for (const m of mods) {
    if (m.version !== '' && m.name !== last) out.push(`${m.name}/`);
    last = m.name;
    out.push(m.fullName);
  }
  return out;
}

/**
 * `strata compose avail [PATTERN]` as Lmod prints `module avail`: one block per visible
 * hierarchy level (the newest first, the core last) with a dashed title, modules in columns
 * (names in byte order, then version order), markers and a legend:
 *   (D) the default of a name that has more than one visible version, (L) loaded,
 *   (R) restricted to a group, (H) hidden (with --show-hidden). Several join as (R,L,D).
 * Terse: `LEVEL:` then `name/` and the fullNames.
 */
export function formatAvail(available: readonly ModuleInfo[], stack: StackFile, pattern?: string | readonly string[], opts: ViewOptions = {}): string[] {
  const width = opts.width ?? 80;
  const levels = availLevels(available, stack, pattern, opts);
  const anyPattern = pattern !== undefined && pattern.length > 0;
  if (opts.terse) return levels.flatMap((l) => [`${levelLabel(l.level)}:`, ...terseNames(l.modules, !anyPattern)]);
  if (levels.length === 0) return [NO_MODULES_FOUND];
  const loaded = new Set(stack.modules.filter((e) => !e.inactive).map((e) => e.key ?? e.fullName));
  const shown = levels.flatMap((l) => l.modules);
  const byName = new Map<string, ModuleInfo[]>();
  const all = visibleLevels(available, stack.modules.filter((e) => !e.inactive).map((e) => ({ key: e.key ?? e.fullName, fullName: e.fullName }))).flatMap((l) => l.modules);
  for (const m of all.filter((x) => opts.showHidden || !x.hidden)) byName.set(m.name, [...(byName.get(m.name) ?? []), m]);
  const defaults = new Set<ModuleInfo>();
  for (const [name, mods] of byName) if (mods.length > 1) {
    const d = defaultOf(name, mods);
    if (d) defaults.add(d);
  }
  const used = new Set<string>();
  const lines: string[] = [];
  for (const l of levels) {
    const cells: Array<[string, string]> = l.modules.map((m) => {
      // Lmod's order: hidden, the properties (sticky), loaded, default; strata's R first.
      const marks: string[] = [];
      if (m.restricted !== null) marks.push('R');
      if (m.hidden) marks.push('H');
      if (m.sticky) marks.push('S');
      if (loaded.has(keyOf(m))) marks.push('L');
      if (defaults.has(m)) marks.push('D');
      for (const k of marks) used.add(k);
      return [m.fullName, marks.length > 0 ? `(${marks.join(',')})` : ''];
    });
    if (lines.length > 0) lines.push('');
    lines.push(dashedTitle(levelLabel(l.level), width), ...pairColumns(cells, width));
  }
  void shown;
  return [...lines, ...legend(used)];
}

/** `strata compose overview`: each visible name with how many versions it has, per level. */
export function formatOverview(available: readonly ModuleInfo[], stack: StackFile, opts: ViewOptions = {}): string[] {
  const width = opts.width ?? 80;
  const lines: string[] = [];
  for (const l of availLevels(available, stack, undefined, opts)) {
    const counts = new Map<string, number>();
    for (const m of l.modules) counts.set(m.name, (counts.get(m.name) ?? 0) + 1);
    if (lines.length > 0) lines.push('');
    lines.push(dashedTitle(levelLabel(l.level), width), ...pairColumns([...counts].map(([n, c]): [string, string] => [n, `(${c})`]), width, '', 3));
  }
  return lines;
}

// ---------------------------------------------------------------------------------------
// spider

/** One build of a module and what must be loaded before it is visible. */
export interface SpiderBuild {
  fullName: string;
  key: string;
  /** Parents, outermost first; empty at the core. */
  loadFirst: string[];
  description?: string;
}

export interface SpiderEntry {
  name: string;
  /** The description of the newest version that has one (Lmod's `spider NAME`). */
  newestDescription?: string;
  /** fullNames, oldest first, each once. */
  versions: string[];
  /** Every build of every version (a version may be built under several parents). */
  builds: SpiderBuild[];
  description?: string;
}

function describe(m: ModuleInfo): string | undefined {
  return m.description ? m.description : undefined;
}

/**
 * Every module of the store (all hierarchy levels), grouped by name, for spider. A pattern
 * selects names whose name or fullName contains it (case-insensitive; a glob with * or ?);
 * hidden modules only with showHidden; builds whose parents cannot be reached are left out.
 */
export function spiderEntries(available: readonly ModuleInfo[], pattern?: string, opts: ViewOptions = {}): SpiderEntry[] {
  const mods = available.filter((m) => (opts.showHidden || !m.hidden) && reachable(m, available));
  const names = [...new Set(mods.filter((m) => patternMatches(m.fullName, pattern) || patternMatches(m.name, pattern)).map((m) => m.name))].sort(byteCompare);
  return names.map((name) => {
    const vs = versionsOf(name, mods);
    const versions = [...new Set(vs.map((m) => m.fullName))];
    const builds = vs.map((m): SpiderBuild => ({ fullName: m.fullName, key: keyOf(m), loadFirst: loadFirst(m), ...(describe(m) ? { description: describe(m) } : {}) }));
    // Lmod: the list of every name shows the oldest version's description, `spider NAME` the newest's.
    const d = vs.find((m) => describe(m));
    const n = [...vs].reverse().find((m) => describe(m));
    return { name, versions, builds, ...(d ? { description: describe(d) } : {}), ...(n ? { newestDescription: describe(n) } : {}) };
  });
}

const SPIDER_TAIL = [
  '',
  'To learn more about a package execute:',
  '',
  '   $ strata compose spider Foo',
  '',
  'where "Foo" is the name of a module.',
  '',
  'To find detailed information about a particular package you',
  'must specify the version if there is more than one version:',
  '',
  '   $ strata compose spider Foo/11.1',
];

const BORDER = '-'.repeat(76);

/** Lmod's spider detail of one version: its description and what to load first. */
function spiderDetail(e: SpiderEntry, fullName: string): string[] {
  const builds = e.builds.filter((b) => b.fullName === fullName);
  const desc = builds.find((b) => b.description)?.description;
  const out = ['', BORDER, `  ${e.name}: ${fullName}`, BORDER];
  if (desc) out.push('    Description:', `      ${desc}`, '');
  out.push('');
  if (builds.some((b) => b.loadFirst.length === 0)) {
    out.push(`    This module can be loaded directly: strata compose load ${fullName}`);
  } else {
    out.push(
      `    You will need to load all module(s) on any one of the lines below before the "${fullName}" module is available to load.`,
      '',
      ...builds.map((b) => `      ${b.loadFirst.join('  ')}`).sort(byteCompare),
    );
  }
  return out;
}

/**
 * `strata compose spider [PATTERN]` in Lmod's three forms: no pattern lists every name with
 * its versions; a pattern naming one module version (or a name with a single version) gives
 * its detail — description and what must be loaded first; otherwise each matching name with
 * its versions. Nothing found: Lmod's "Unable to find" error (exit 1).
 */
export function formatSpider(available: readonly ModuleInfo[], pattern?: string, opts: ViewOptions = {}): string[] {
  const spec = pattern === undefined ? undefined : normalizeSpec(pattern);
  const all = spiderEntries(available, undefined, opts);
  // An exact name or fullName is looked up as such; anything else is a search.
  const byName = spec === undefined ? undefined : all.find((e) => e.name === spec);
  const byFull = spec === undefined ? undefined : all.find((e) => e.versions.includes(spec));
  const found = spec === undefined ? all : byName ? [byName] : byFull ? [byFull] : spiderEntries(available, spec, opts);
  if (found.length === 0) {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${LMOD_ERROR}Unable to find: "${spec}".`, { hint: 'see strata compose spider for every module' });
  }
  if (opts.terse) {
    if (byFull && !byName) return [spec!];
    return found.flatMap((e) => terseNames(e.versions.map((f) => ({ fullName: f, name: e.name, version: splitFullName(f).version }) as ModuleInfo), spec === undefined));
  }
  if (byFull && !byName) return spiderDetail(byFull, spec!);
  if (byName && byName.versions.length === 1) return spiderDetail(byName, byName.versions[0]!);
  if (spec === undefined || !byName) {
    const out = ['', BORDER, 'The following is a list of the modules and extensions currently available:', BORDER];
    for (const e of found) {
      out.push(`  ${e.name}: ${e.versions.join(', ')}`);
      if (e.description) out.push(`    ${e.description}`);
      out.push('');
    }
    return [...out, BORDER, ...SPIDER_TAIL, '', BORDER];
  }
  const e = byName;
  const out = ['', BORDER, `  ${e.name}:`, BORDER];
  if (e.newestDescription) out.push('    Description:', `      ${e.newestDescription}`, '');
  out.push('     Versions:', ...e.versions.map((v) => `        ${v}`), '');
  out.push(
    BORDER,
    `  For detailed information about a specific "${e.name}" package (including how to load the modules) use the module's full name.`,
    '  Note that names that have a trailing (E) are extensions provided by other modules.',
    '  For example:',
    '',
    `     $ strata compose spider ${e.versions[e.versions.length - 1]}`,
    BORDER,
  );
  return out;
}

// ---------------------------------------------------------------------------------------
// whatis, keyword, show

/** A module's whatis lines as Lmod keeps them: the description, the extra lines, the keywords. */
export function whatisLines(m: ModuleInfo): string[] {
  const out: string[] = [];
  if (m.description) out.push(`Description: ${m.description}`);
  out.push(...(m.whatis ?? []));
  if (m.keywords && m.keywords.length > 0) out.push(`Keywords: ${m.keywords.join(', ')}`);
  return out;
}

/** `strata compose whatis M`: each whatis line after the fullName padded to 20, as Lmod. */
export function formatWhatis(m: ModuleInfo): string[] {
  return whatisLines(m).map((l) => `${m.fullName.padEnd(20)}: ${l}`);
}

/**
 * `strata compose keyword WORD…`: modules whose name or whatis text (description, whatis
 * lines, keywords) contains any of the words, case-insensitive, across the whole store.
 */
export function keywordMatches(available: readonly ModuleInfo[], words: readonly string[], opts: ViewOptions = {}): ModuleInfo[] {
  const ws = words.map((w) => w.toLowerCase());
  return sortForListing(
    available.filter((m) => (opts.showHidden || !m.hidden) && reachable(m, available) && ws.some((w) => [m.fullName, ...whatisLines(m)].some((t) => t.toLowerCase().includes(w)))),
  ).filter((m, i, a) => a.findIndex((x) => x.fullName === m.fullName) === i);
}

export function formatKeyword(available: readonly ModuleInfo[], words: readonly string[], opts: ViewOptions = {}): string[] {
  const found = keywordMatches(available, words, opts);
  if (opts.terse) return terseNames(found);
  const out = ['', BORDER, '', `The following modules match your search criteria: "${words.join('", "')}"`, BORDER, ''];
  const names = [...new Set(found.map((m) => m.name))];
  for (const n of names) {
    const vs = found.filter((m) => m.name === n);
    out.push(`  ${n}: ${vs.map((m) => m.fullName).join(', ')}`);
    const d = [...vs].reverse().find((m) => m.description)?.description;
    if (d) out.push(`    ${d}`);
    out.push('');
  }
  return [...out, BORDER, ...SPIDER_TAIL, '', BORDER];
}

/**
 * `strata compose show M`: the module as Lmod modulefile statements, in the order strata
 * applies them: family, sticky, whatis, conflict, prereq, depends_on, load_any, environment.
 */
export function formatShow(m: ModuleInfo, env: ReadonlyArray<{ op: string; var: string; value: string }>): string[] {
  const q = (s: string) => JSON.stringify(s);
  const list = (xs: readonly string[]) => xs.map(q).join(',');
  return [
    ...(m.family ? [`family(${q(m.family)})`] : []),
    ...(m.sticky ? ['add_property("lmod","sticky")'] : []),
    ...whatisLines(m).map((l) => `whatis(${q(l)})`),
    ...m.conflicts.map((c) => `conflict(${q(c)})`),
    ...(m.prereq ?? []).map((p) => `prereq(${q(p)})`),
    ...m.requires.map((r) => `depends_on(${q(r)})`),
    ...(m.loadAny ?? []).map((g) => `load_any(${list(g)})`),
    ...env.map((e) => `${({ prepend: 'prepend_path', append: 'append_path', set: 'setenv' } as Record<string, string>)[e.op]}(${q(e.var)},${q(e.value)})`),
  ];
}

// ---------------------------------------------------------------------------------------
// list, savelist, describe

/** `strata compose list`: Lmod's numbered list, (S) for sticky modules, then the inactive ones. */
export function formatList(stack: StackFile, available: readonly ModuleInfo[], opts: ViewOptions = {}): string[] {
  const active = stack.modules.filter((e) => !e.inactive);
  const inactive = stack.modules.filter((e) => e.inactive);
  if (opts.terse) return active.length > 0 ? active.map((e) => e.fullName) : ['No modules loaded'];
  const sticky = (k: string) => available.some((m) => keyOf(m) === k && m.sticky);
  if (active.length === 0 && inactive.length === 0) return ['No modules loaded'];
  const used = new Set<string>();
  const cells = active.map((e, i) => {
    const s = sticky(e.key ?? e.fullName);
    if (s) used.add('S');
    return `${i + 1}) ${e.fullName}${s ? ' (S)' : ''}`;
  });
  const out = ['Currently Loaded Modules:', ...(cells.length > 0 ? columns(cells, opts.width ?? 80, '  ', 3) : ['  None found.'])];
  if (inactive.length > 0) out.push('', 'Inactive Modules:', ...columns(inactive.map((e, i) => `${i + 1}) ${e.userName ?? e.fullName}`), opts.width ?? 80, '  ', 3));
  return [...out, ...legend(used)];
}

export function formatSavelist(names: readonly string[], opts: ViewOptions = {}): string[] {
  if (opts.terse) return [...names];
  if (names.length === 0) return ['No named collections.'];
  return ['Named collection list :', ...columns(names.map((n, i) => `${i + 1}) ${n}`), opts.width ?? 80, '  ', 2)];
}

export function formatDescribe(name: string, contents: readonly string[], opts: ViewOptions = {}): string[] {
  if (opts.terse) return [...contents];
  return [`Collection "${name}" contains: `, ...columns(contents.map((m, i) => `${i + 1}) ${m}`), opts.width ?? 80, '   ', 4)];
}

/** The level a module lives at, for --json views. */
export { levelOf };
