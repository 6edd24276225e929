/**
 * The stack (strata.json) and the Lmod operations on it: load, unload, swap, purge, reset,
 * save/restore, and the layer order of a lock. The stack plays the part of Lmod's module table:
 * the loaded modules in load order, each marked as the user's or as loaded for another module,
 * plus the modules the hierarchy made inactive.
 *
 * Pure functions: each takes a stack and the available modules and returns a new stack plus
 * the messages to print; on an error it throws and the caller's stack is untouched (a command is
 * all or nothing, as an Lmod command whose output is not evaluated). Schema:
 * spec/stack.schema.json; rules, message wording and every difference from Lmod:
 * spec/compose.md.
 */
import type { Collection, PinnedModule } from '../store/index.js';
import { StrataError, COMPOSE_ERR } from './errors.js';
import { openLevels, levelOf, visibleModules } from './hierarchy.js';
import {
  byteCompare,
  checkAccess,
  findSpec,
  keyOf,
  LMOD_ERROR,
  namesLoaded,
  normalizeSpec,
  snOf,
  whyNotFound,
  type ModuleInfo,
  type User,
} from './resolve.js';
import { splitFullName } from './version-order.js';

export type { Collection, PinnedModule };

/** One line of strata.json. */
export interface StackEntry {
  /** The module as users name it (name/version). */
  fullName: string;
  /** Its store name, when that differs from fullName (a build under hierarchy parents). */
  key?: string;
  /** What was typed (or required) to load it, when that differs from fullName; a hierarchy change resolves it again. */
  userName?: string;
  /** Loaded for another module (its requires or load-any), not asked for: it goes when nothing needs it. */
  auto?: boolean;
  /** Unloaded by a hierarchy change (its parents left); loaded again when they return. Not in the lock. */
  inactive?: boolean;
  /** fullNames of the loaded modules whose requirements this entry satisfies (informative; recomputed on every change). */
  requiredBy?: string[];
}

/** strata.json: the loaded modules in load order (Lmod's list order), inactive ones kept where they fell. */
export interface StackFile {
  stackVersion: 1;
  modules: StackEntry[];
}

/** Result of every stack operation: the new stack and what to tell the user, in order. */
export interface StackChange {
  stack: StackFile;
  messages: string[];
}

export function emptyStack(): StackFile {
  return { stackVersion: 1, modules: [] };
}

// ---------------------------------------------------------------------------------------
// strata.json text

function invalid(why: string): StrataError {
  return new StrataError(COMPOSE_ERR.STACK_INVALID, `strata.json is not a strata stack file: ${why}`, {
    hint: 'fix it, or remove it and load the modules again',
  });
}

const ENTRY_KEYS = ['fullName', 'key', 'userName', 'auto', 'inactive', 'requiredBy'];

/** Validates a parsed strata.json (see spec/stack.schema.json). Throws ERR_STACK_INVALID. */
export function validateStack(v: unknown): StackFile {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid('not a JSON object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'stackVersion' && k !== 'modules') throw invalid(`unknown key "${k}"`);
  if (o.stackVersion !== 1) throw invalid(`stackVersion is ${JSON.stringify(o.stackVersion)}, this strata reads 1`);
  if (!Array.isArray(o.modules)) throw invalid('"modules" is not an array');
  const names = new Set<string>();
  const modules = o.modules.map((e, i): StackEntry => {
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw invalid(`modules[${i}] is not an object`);
    const m = e as Record<string, unknown>;
    for (const k of Object.keys(m)) if (!ENTRY_KEYS.includes(k)) throw invalid(`modules[${i}] has unknown key "${k}"`);
    if (typeof m.fullName !== 'string' || m.fullName === '') throw invalid(`modules[${i}].fullName is not a module name`);
    for (const k of ['key', 'userName'] as const) {
      if (m[k] !== undefined && (typeof m[k] !== 'string' || m[k] === '')) throw invalid(`modules[${i}].${k} is not a name`);
    }
    for (const k of ['auto', 'inactive'] as const) if (m[k] !== undefined && typeof m[k] !== 'boolean') throw invalid(`modules[${i}].${k} is not true/false`);
    if (m.requiredBy !== undefined && (!Array.isArray(m.requiredBy) || m.requiredBy.some((r) => typeof r !== 'string'))) {
      throw invalid(`modules[${i}].requiredBy is not a list of names`);
    }
    const name = splitFullName(m.fullName).name;
    if (names.has(name)) throw invalid(`${name} is listed twice (one module of a name at a time)`);
    names.add(name);
    return tidy(m as unknown as StackEntry);
  });
  return { stackVersion: 1, modules };
}

/** An entry with only the keys that say something, in schema order. */
function tidy(e: StackEntry): StackEntry {
  const out: StackEntry = { fullName: e.fullName };
  if (e.key !== undefined && e.key !== e.fullName) out.key = e.key;
  if (e.userName !== undefined && e.userName !== e.fullName) out.userName = e.userName;
  if (e.auto) out.auto = true;
  if (e.inactive) out.inactive = true;
  if (e.requiredBy && e.requiredBy.length > 0) out.requiredBy = [...e.requiredBy];
  return out;
}

/** Parses strata.json text. Throws ERR_STACK_INVALID. */
export function parseStack(text: string): StackFile {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw invalid(`not JSON (${(e as Error).message})`);
  }
  return validateStack(v);
}

/** strata.json text: fixed key order, two-space indent, final newline. */
export function serializeStack(stack: StackFile): string {
  return JSON.stringify({ stackVersion: 1, modules: stack.modules.map(tidy) }, null, 2) + '\n';
}

/** The loaded (active) entries of a stack, in load order. */
export function activeEntries(stack: StackFile): StackEntry[] {
  return stack.modules.filter((e) => !e.inactive);
}

// ---------------------------------------------------------------------------------------
// The module table

interface Entry {
  key: string;
  fullName: string;
  name: string;
  userName: string;
  auto: boolean;
  inactive: boolean;
}

function entryOf(e: StackEntry): Entry {
  return {
    key: e.key ?? e.fullName,
    fullName: e.fullName,
    name: splitFullName(e.fullName).name,
    userName: e.userName ?? e.fullName,
    auto: e.auto === true,
    inactive: e.inactive === true,
  };
}

class Table {
  entries: Entry[];
  private readonly byKey = new Map<string, ModuleInfo>();
  /** Levels some module lives at: only opening one of these changes what is visible. */
  private readonly realLevels = new Set<string>();
  private visibleCache: { sig: string; mods: ModuleInfo[] } | undefined;

  constructor(
    stack: StackFile,
    readonly available: readonly ModuleInfo[],
  ) {
    this.entries = stack.modules.map(entryOf);
    for (const m of available) {
      if (!this.byKey.has(keyOf(m))) this.byKey.set(keyOf(m), m);
      this.realLevels.add(levelOf(m));
    }
  }

  /** The record of an entry; a stub (no requirements) when it left the store. */
  info(e: Entry): ModuleInfo {
    const m = this.byKey.get(e.key);
    if (m) return m;
    const { name, version } = splitFullName(e.fullName);
    return { key: e.key, fullName: e.fullName, name, version, record: '', requires: [], conflicts: [], family: null, restricted: null, isDefault: false };
  }

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  active(): Entry[] {
    return this.entries.filter((e) => !e.inactive);
  }

  activeByName(name: string): Entry | undefined {
    return this.entries.find((e) => !e.inactive && e.name === name);
  }

  /** The modules visible now (hierarchy levels the active modules open). */
  visible(): ModuleInfo[] {
    const active = this.active();
    const sig = active.map((e) => e.key).join('\n');
    if (this.visibleCache?.sig !== sig) this.visibleCache = { sig, mods: visibleModules(this.available, active) };
    return this.visibleCache.mods;
  }

  /** The open levels that hold modules, as a comparable signature (Lmod's MODULEPATH). */
  levelSignature(): string {
    return openLevels(this.active())
      .filter((l) => this.realLevels.has(l))
      .sort()
      .join('\n');
  }

  /**
   * Whether requirement `spec` is met by a loaded module (Lmod isloaded): a name is met by any
   * loaded version; a fullName or partial version by the loaded module it resolves to.
   */
  satisfied(spec: string): boolean {
    const s = normalizeSpec(spec);
    const act = this.active();
    if (act.some((e) => e.name === s || e.fullName === s)) return true;
    const m = findSpec(s, this.visible());
    return m !== undefined && act.some((e) => e.fullName === m.fullName);
  }

  /** Specs through which a module keeps others loaded: requires and load-any alternatives. */
  needs(m: ModuleInfo): string[] {
    return [...m.requires, ...(m.loadAny ?? []).flat()];
  }

  /** Active entries other than `e` that need e's name (Lmod's reference count). */
  requirers(e: Entry): Entry[] {
    return this.active().filter((x) => x !== e && this.needs(this.info(x)).some((r) => snOf(r, this.available) === e.name));
  }

  /** Adds a loaded module after the loaded ones, before the inactive ones (Lmod lists those last). */
  addActive(e: Entry): void {
    const at = this.entries.findIndex((x) => x.inactive);
    if (at < 0) this.entries.push(e);
    else this.entries.splice(at, 0, e);
  }

  snapshot(): Entry[] {
    return this.entries.map((e) => ({ ...e }));
  }

  toStack(): StackFile {
    const modules = this.entries.map((e): StackEntry => {
      const by = e.inactive ? [] : this.requirers(e).map((x) => x.fullName);
      return tidy({ fullName: e.fullName, key: e.key, userName: e.userName, auto: e.auto, inactive: e.inactive, requiredBy: by });
    });
    return { stackVersion: 1, modules };
  }
}

function cycleError(path: readonly string[]): StrataError {
  return new StrataError(COMPOSE_ERR.REQUIRE_CYCLE, `Module requirements form a cycle: ${path.join(' -> ')}`, {
    hint: 're-import one of these modules without the requirement that closes the loop',
  });
}

/** Numbered lines of a report, as Lmod's column lists number them. */
function numbered(title: string, items: readonly string[]): string {
  return [title, ...items.map((s, i) => `${String(i + 1).padStart(3)}) ${s}`)].join('\n');
}

/** Lmod's MT:reportChanges: what a command did to modules that were loaded (or inactive) before it. */
function reportChanges(before: readonly Entry[], after: Table): string[] {
  const inactive: string[] = [];
  const activated: string[] = [];
  const reloaded: string[] = [];
  const changed: string[] = [];
  const orig = [...before].sort((a, b) => byteCompare(a.name, b.name));
  for (const o of orig) {
    const now = after.entries.find((e) => e.name === o.name);
    if (!now) continue;
    if (now.inactive && !o.inactive) inactive.push(o.userName);
    else if (!now.inactive) {
      if (o.inactive) activated.push(now.fullName);
      else if (now.key !== o.key) {
        if (now.fullName === o.fullName) reloaded.push(o.fullName);
        else changed.push(`${o.fullName} => ${now.fullName}`);
      }
    }
  }
  const out: string[] = [];
  if (inactive.length > 0) out.push(numbered('Inactive Modules:', inactive));
  if (activated.length > 0) out.push(numbered('Activating Modules:', activated));
  if (reloaded.length > 0) out.push(numbered('Due to MODULEPATH changes, the following have been reloaded:', reloaded));
  if (changed.length > 0) out.push(numbered('The following have been reloaded with a version change:', changed));
  return out;
}

/** Lmod's w_MissingModules for requirements no loaded module meets, or undefined. */
function missingWarning(t: Table): string | undefined {
  const missing = new Map<string, string[]>();
  for (const x of t.active()) {
    for (const r of t.info(x).requires) {
      if (t.satisfied(r)) continue;
      const list = missing.get(r) ?? [];
      list.push(x.fullName);
      missing.set(r, list);
    }
  }
  if (missing.size === 0) return undefined;
  const items = [...missing.keys()].sort(byteCompare).map((k) => `${k} (required by: ${missing.get(k)!.join(', ')})`);
  return `The following dependent module(s) are not currently loaded: ${items.join(', ')}`;
}

/**
 * Runs the Lmod operations on a table. One Engine per command: it remembers the table as the
 * command found it, so the closing report says what changed, as Lmod's does.
 */
class Engine {
  readonly t: Table;
  readonly messages: string[] = [];
  private readonly before: Entry[];
  /** A requirement was loaded or the user unloaded something: check requirements at the end (Lmod registerDependencyCk). */
  private depCheck = false;
  /** Sticky modules a non-forced unload took away, to be loaded again (Lmod reload_sticky). */
  private sticky: Entry[] = [];

  constructor(
    stack: StackFile,
    available: readonly ModuleInfo[],
    readonly user: User,
  ) {
    this.t = new Table(stack, available);
    this.before = this.t.snapshot();
  }

  /** fullNames of the modules whose requirements are being loaded, innermost last. */
  private readonly requiring: string[] = [];

  // ---- load ----------------------------------------------------------------------------

  /** Loads what `spec` names at `depth` (0: the user's; more: for another module). Returns its entry. */
  load(spec: string, depth: number, chain: readonly string[]): Entry {
    const t = this.t;
    const userName = normalizeSpec(spec);
    const m = findSpec(userName, t.visible());
    if (!m) throw whyNotFound([userName], t.available);
    checkAccess(m, this.user);
    const at = chain.indexOf(m.name);
    if (at >= 0 && at === chain.length - 1) {
      // Not a loop: one version of a name requiring another, which cannot be loaded beside it.
      const requirer = this.requiring[this.requiring.length - 1] ?? m.name;
      throw new StrataError(COMPOSE_ERR.CONFLICT, `${requirer} requires ${m.fullName}, another version of the same module`, {
        hint: 'only one version of a name is loaded at a time; re-import the module without that requirement',
      });
    }
    if (at >= 0) throw cycleError([...chain.slice(at), m.name]);

    // One module of a name: loading it again, or another version, unloads the loaded one first.
    const same = t.activeByName(m.name);
    if (same) this.unload(same, true);
    // Loading the same build again never makes a module the user loaded one loaded for another.
    const userBefore = same !== undefined && same.key === keyOf(m) && !same.auto;
    t.entries = t.entries.filter((e) => !(e.inactive && e.name === m.name));

    const info = m;
    const upstream = info.conflicts.filter((c) => t.active().some((e) => namesLoaded(c, e)));
    if (upstream.length > 0) {
      throw new StrataError(
        COMPOSE_ERR.CONFLICT,
        `${LMOD_ERROR}Cannot load module "${m.fullName}" because these module(s) are loaded: ${upstream.join(' ')}`,
        { hint: `unload them first (strata compose unload ${upstream.join(' ')}), or use strata compose swap` },
      );
    }
    const downstream = t.active().find((e) => t.info(e).conflicts.some((c) => namesLoaded(c, m)));
    if (downstream) {
      throw new StrataError(
        COMPOSE_ERR.CONFLICT,
        `${LMOD_ERROR}Cannot load module "${m.fullName}" because this module set a conflict: "${downstream.fullName}"`,
        {
          hint: `strata refuses a conflict either module declares (Lmod checks only the module being loaded); unload ${downstream.fullName} first, or swap it: strata compose swap ${downstream.fullName} ${m.fullName}`,
        },
      );
    }
    const unmet = (info.prereq ?? []).filter((p) => !t.satisfied(p));
    if (unmet.length > 0) {
      throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${LMOD_ERROR}Cannot load module "${m.fullName}" without these module(s) loaded: ${unmet.join(' ')}`, {
        hint: `load them first: strata compose load ${unmet.join(' ')}`,
      });
    }

    const famOld = info.family === null ? undefined : t.active().find((e) => e.name !== m.name && t.info(e).family === info.family);
    const nextChain = [...chain, m.name];
    const loadedBefore = new Set(t.active().map((e) => e.name));
    if (info.requires.length > 0) this.depCheck = true;
    for (const r of info.requires) {
      if (t.satisfied(r)) continue;
      this.requiring.push(m.fullName);
      try {
        this.load(r, depth + 1, nextChain);
      } catch (e) {
        if (e instanceof StrataError && e.code === COMPOSE_ERR.NOT_FOUND && !e.message.includes('Cannot load module')) {
          throw new StrataError(e.code, e.message, { hint: `required by ${m.fullName}; ${e.hint ?? ''}`.replace(/; $/, ''), cause: e });
        }
        throw e;
      } finally {
        this.requiring.pop();
      }
    }
    // Lmod's load_any: the first alternative that loads (one loaded already is loaded again).
    for (const group of info.loadAny ?? []) {
      let done = false;
      for (const a of group) {
        const snap = t.snapshot();
        const said = this.messages.length;
        try {
          this.load(a, depth + 1, nextChain);
          done = true;
          break;
        } catch (e) {
          if (!(e instanceof StrataError) || (e.code !== COMPOSE_ERR.NOT_FOUND && e.code !== COMPOSE_ERR.ACCESS_DENIED)) throw e;
          t.entries = snap;
          this.messages.length = said;
        }
      }
      if (!done) {
        throw new StrataError(
          COMPOSE_ERR.NOT_FOUND,
          `${LMOD_ERROR}The load_any function failed because it could not find any of the following modules : ${group.join(' ')}`,
          { hint: `${m.fullName} needs one of them; check the spelling, or strata compose spider ${splitFullName(group[0]!).name}` },
        );
      }
    }
    // A requirement that brought in another module of our own family cannot be right.
    if (info.family !== null) {
      const clash = t.active().find((e) => e.name !== m.name && !loadedBefore.has(e.name) && t.info(e).family === info.family);
      if (clash) {
        throw new StrataError(
          COMPOSE_ERR.CONFLICT,
          `${LMOD_ERROR}You can only have one ${info.family} module loaded at a time. You already have ${clash.fullName} loaded.`,
          { hint: `the requirements of ${m.fullName} load ${clash.fullName}; fix the module's requires` },
        );
      }
    }

    const entry: Entry = { key: keyOf(m), fullName: m.fullName, name: m.name, userName: userBefore && depth > 0 ? same.userName : userName, auto: depth > 0 && !userBefore, inactive: false };
    t.addActive(entry);

    if (famOld && t.active().includes(famOld)) {
      // Lmod's family swap: unload the old member and the new module, then load the new one again.
      this.messages.push(`Lmod is automatically replacing "${famOld.fullName}" with "${m.fullName}".`);
      this.unload(famOld, true);
      this.unload(entry, true);
      return this.load(userName, depth, chain);
    }
    return entry;
  }

  /** load() that leaves the table as it was when it fails (reloads after a hierarchy change). */
  tryLoad(spec: string, depth: number): boolean {
    const snap = this.t.snapshot();
    const said = this.messages.length;
    try {
      this.load(spec, depth, []);
      return true;
    } catch (e) {
      if (!(e instanceof StrataError)) throw e;
      this.t.entries = snap;
      this.messages.length = said;
      return false;
    }
  }

  /**
   * Lmod's load_usr of several specs: each resolved among the modules visible at its turn. The
   * first spec failing stops the command; a later one waits until the hierarchy settled.
   */
  loadAll(specs: readonly string[]): void {
    const deferred: string[] = [];
    specs.forEach((raw, i) => {
      const s = normalizeSpec(raw);
      if (findSpec(s, this.t.visible()) === undefined) {
        if (i === 0) throw whyNotFound([s], this.t.available);
        deferred.push(s);
        return;
      }
      this.load(s, 0, []);
    });
    this.settle();
    const unknown: string[] = [];
    // Lmod's module queue is taken from its end.
    for (const s of deferred.reverse()) {
      if (findSpec(s, this.t.visible()) === undefined) unknown.push(s);
      else {
        this.load(s, 0, []);
        this.settle();
      }
    }
    // Named in the order they were given, as Lmod's error lists them.
    if (unknown.length > 0) throw whyNotFound(unknown.reverse(), this.t.available);
  }

  // ---- unload --------------------------------------------------------------------------

  /**
   * Unloads an entry and then every requirement it had loaded that nothing loaded needs any
   * more (Lmod's forgo, recursively). A sticky module asked away without force is loaded again
   * at the end of the command.
   */
  unload(e: Entry, force: boolean): void {
    const t = this.t;
    if (!t.entries.includes(e)) return;
    t.entries = t.entries.filter((x) => x !== e);
    if (e.inactive) return;
    const info = t.info(e);
    if (info.sticky && !force && !this.sticky.some((s) => s.name === e.name)) this.sticky.push(e);
    for (const r of t.needs(info)) {
      const d = t.activeByName(snOf(r, t.available));
      if (d && d.auto && t.requirers(d).length === 0) this.unload(d, force);
    }
  }

  /** `unload` as the user asks it: Lmod's unload_usr (requirements checked at the end). */
  unloadUser(specs: readonly string[], force: boolean): void {
    this.depCheck = true;
    for (const s of specs) {
      const spec = normalizeSpec(s);
      const e =
        this.t.active().find((x) => namesLoaded(spec, x)) ??
        this.t.entries.find((x) => x.inactive && (x.name === spec || x.userName === spec || x.fullName === spec));
      // Not loaded (a partial version, another version, an unknown name): ignored, as in Lmod.
      if (e) this.unload(e, force);
    }
    this.settle();
  }

  purge(force: boolean): void {
    for (const e of [...this.t.entries].reverse()) this.unload(e, force);
  }

  // ---- the hierarchy -------------------------------------------------------------------

  private levels = '';

  /** Marks the visible set as the one the next settle() compares with. */
  mark(): void {
    this.levels = this.t.levelSignature();
  }

  /** After a load or unload: when the open levels changed, Lmod's reloadAll. */
  settle(): void {
    const now = this.t.levelSignature();
    if (now === this.levels) return;
    this.reloadAll();
    this.levels = this.t.levelSignature();
  }

  /**
   * Lmod's reloadAll: every module, in load order, is resolved again by the name it was loaded
   * by; one that now resolves to another build (or to nothing) is unloaded and, where it can be,
   * loaded again. Inactive modules are loaded when they can be. Whatever is not loaded at the
   * end becomes inactive, to come back when its parents do.
   */
  private reloadAll(): void {
    const t = this.t;
    const snap = t.snapshot();
    for (const v of snap) {
      const cur = t.activeByName(v.name);
      if (cur) {
        const m = findSpec(cur.userName, t.visible());
        if (m && keyOf(m) === cur.key) continue;
        this.unload(cur, true);
        if (findSpec(cur.userName, t.visible())) this.tryLoad(cur.userName, 0);
      } else {
        this.tryLoad(v.userName, 0);
      }
    }
    // What did not come back is inactive, listed after the loaded modules in this pass's order.
    const inactive: Entry[] = [];
    for (const v of snap) {
      if (t.activeByName(v.name)) continue;
      const kept = t.entries.find((e) => e.name === v.name);
      inactive.push(kept ? { ...kept, inactive: true } : { ...v, auto: false, inactive: true });
    }
    t.entries = [...t.entries.filter((e) => !e.inactive && !inactive.some((i) => i.name === e.name)), ...inactive];
  }

  // ---- the end of a command ------------------------------------------------------------

  finish(): StackChange {
    const t = this.t;
    if (this.sticky.length > 0) {
      const kept: string[] = [];
      for (const s of this.sticky) {
        if (t.activeByName(s.name)) continue;
        if (this.tryLoad(s.userName, 0)) kept.push(s.fullName);
      }
      this.settle();
      if (kept.length > 0) this.messages.push(numbered('The following modules were not unloaded:\n  (Use "strata compose --force purge" to unload all):\n', kept));
    }
    const out = [...this.messages, ...reportChanges(this.before, t)];
    if (this.depCheck) {
      const warn = missingWarning(t);
      if (warn) out.push(warn);
    }
    return { stack: t.toStack(), messages: out };
  }
}

// ---------------------------------------------------------------------------------------
// Operations

/** Splits `a:b, c d` (Lmod's list of default modules) into specs. */
export function splitModuleList(text: string): string[] {
  return text
    .split(/[\s,:]+/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * `strata compose load M…`, Lmod's `module load`: each spec is resolved among the modules
 * visible at its turn and loaded with Lmod's rules (spec/compose.md). A module already loaded
 * is loaded again and moves to the end. All or nothing: on any error (unknown module,
 * conflict, access denied, missing prereq, require cycle) it throws and nothing changes.
 */
export function load(stack: StackFile, specs: readonly string[], available: readonly ModuleInfo[], user: User): StackChange {
  const g = new Engine(stack, available, user);
  g.mark();
  g.loadAll(specs);
  return g.finish();
}

/** The former name of load (`strata compose add`). */
export const add = load;

/**
 * `strata compose unload M…`, Lmod's `module unload`. A spec names a loaded module by name or
 * exact fullName (a partial version names nothing) or an inactive one by name; what it names
 * nothing loaded is ignored, as in Lmod. Requirements loaded only for the module go with it.
 * A sticky module stays unless `force`. Unloading a requirement another module needs is
 * allowed and warned about (Lmod's w_MissingModules).
 */
export function unload(
  stack: StackFile,
  specs: readonly string[],
  available: readonly ModuleInfo[],
  user: User = { name: 'root', uid: 0, groups: [] },
  opts: { force?: boolean } = {},
): StackChange {
  const g = new Engine(stack, available, user);
  g.mark();
  g.unloadUser(specs, opts.force === true);
  return g.finish();
}

/** The former name of unload (`strata compose rm`). */
export const remove = unload;

/**
 * `strata compose swap A B`, Lmod's `module swap`: unload A (a name, or a fullName of a loaded
 * name), then load B. `swap B` alone swaps the loaded module of B's name. A must be loaded
 * (Lmod's "Swap failed"). All or nothing.
 */
export function swap(stack: StackFile, a: string, b: string | undefined, available: readonly ModuleInfo[], user: User): StackChange {
  const g = new Engine(stack, available, user);
  g.mark();
  const target = normalizeSpec(b ?? a);
  const old = normalizeSpec(b === undefined ? snOf(a, available) : a);
  const e =
    g.t.entries.find((x) => x.name === old || x.fullName === old) ?? g.t.entries.find((x) => x.name === splitFullName(old).name);
  if (!e) {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${LMOD_ERROR}Swap failed: "${old}" is not loaded.`, { hint: 'see strata compose list' });
  }
  // Lmod's swap unloads without reloading a sticky module.
  g.unload(e, true);
  g.settle();
  g.load(target, 0, []);
  g.settle();
  return g.finish();
}

/** `strata compose purge`: every module goes, sticky ones only with `force` (Lmod's purge). */
export function purge(stack: StackFile, available: readonly ModuleInfo[] = [], opts: { force?: boolean; user?: User } = {}): StackChange {
  const g = new Engine(stack, available, opts.user ?? { name: 'root', uid: 0, groups: [] });
  g.mark();
  g.purge(opts.force === true);
  g.settle();
  return g.finish();
}

/**
 * `strata compose reset`: purge everything (sticky modules too), then load the site's default
 * modules, as Lmod's reset does with LMOD_SYSTEM_DEFAULT_MODULES. No defaults: an error and no
 * change (as Lmod).
 */
export function reset(stack: StackFile, defaults: readonly string[], available: readonly ModuleInfo[], user: User): StackChange {
  if (defaults.length === 0) {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, 'The system default contains no modules', {
      hint: 'set STRATA_SYSTEM_DEFAULT_MODULES (or LMOD_SYSTEM_DEFAULT_MODULES) to the modules reset loads; no changes in loaded modules',
    });
  }
  const g = new Engine(stack, available, user);
  g.mark();
  g.purge(true);
  g.settle();
  g.messages.push('Running "strata compose reset". Resetting modules to system default.');
  g.loadAll(defaults);
  return g.finish();
}

/**
 * The modules a lock holds, lowest layer first: the loaded modules in load order, which is
 * Lmod's list order, so a later module's env (PATH) and files come before an earlier one's.
 * Inactive entries are left out. A module no longer in the store is ERR_NOT_FOUND.
 */
export function layerOrder(stack: StackFile, available: readonly ModuleInfo[]): ModuleInfo[] {
  const byKey = new Map<string, ModuleInfo>();
  for (const m of available) if (!byKey.has(keyOf(m))) byKey.set(keyOf(m), m);
  return activeEntries(stack).map((e) => {
    const m = byKey.get(e.key ?? e.fullName);
    if (!m) {
      throw new StrataError(COMPOSE_ERR.NOT_FOUND, `Module ${e.key ?? e.fullName} is in the stack but not in the store`, {
        hint: `import it again, or strata compose unload ${e.fullName}`,
      });
    }
    return m;
  });
}

/**
 * Whether the stack can be built: every loaded module is in the store, its requirements,
 * prereqs and load-any groups are met by loaded modules, and its hierarchy parents are loaded.
 * Throws ERR_REQUIREMENTS_UNMET (or ERR_NOT_FOUND for a module gone from the store), one line
 * naming every problem and what to do.
 */
export function checkRequirementsMet(stack: StackFile, available: readonly ModuleInfo[]): void {
  const t = new Table(stack, available);
  const gone = t.active().filter((e) => !t.has(e.key));
  if (gone.length > 0) {
    const names = gone.map((e) => e.key);
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `the stack holds ${names.join(', ')}, which ${names.length === 1 ? 'is' : 'are'} no longer in the store`, {
      hint: `import ${names.length === 1 ? 'it' : 'them'} again, or strata compose unload ${gone.map((e) => e.fullName).join(' ')}`,
    });
  }
  const problems: string[] = [];
  const fixes = new Set<string>();
  const act = t.active();
  const loadedAs = (spec: string): string => {
    const e = act.find((x) => x.name === snOf(spec, available));
    return e ? ` (${e.fullName} is loaded)` : '';
  };
  for (const e of act) {
    const m = t.info(e);
    for (const r of [...m.requires, ...(m.prereq ?? [])]) {
      if (t.satisfied(r)) continue;
      problems.push(`${m.fullName} needs ${r}${loadedAs(r)}`);
      fixes.add(r);
    }
    for (const g of m.loadAny ?? []) {
      if (g.some((a) => t.satisfied(a))) continue;
      problems.push(`${m.fullName} needs one of ${g.join(' ')}`);
      fixes.add(g[0]!);
    }
    for (const p of m.parents ?? []) {
      if (act.some((x) => x.fullName === p)) continue;
      problems.push(`${m.fullName} is built under ${p}, which is not loaded`);
      fixes.add(p);
    }
  }
  if (problems.length === 0) return;
  throw new StrataError(COMPOSE_ERR.REQUIREMENTS_UNMET, `the stack's requirements are not met: ${problems.join('; ')}`, {
    hint: `load what is missing (strata compose load ${[...fixes].join(' ')}) or unload the modules that need it; nothing was built`,
  });
}

// ---------------------------------------------------------------------------------------
// Collections

/**
 * `strata compose save`: pins every loaded module to its current record CID (inactive modules
 * are not saved, as Lmod saves the active ones). Throws ERR_NOT_FOUND if a stack module is no
 * longer in the store.
 */
export function saveCollection(stack: StackFile, available: readonly ModuleInfo[]): Collection {
  const modules = layerOrder(stack, available).map((m, i): PinnedModule => {
    const p: PinnedModule = { fullName: keyOf(m), record: m.record };
    if (activeEntries(stack)[i]!.auto) p.auto = true;
    return p;
  });
  return { collectionVersion: 1, modules };
}

/** What `describe` lists of a collection: the modules' fullNames in order (store names for modules gone). */
export function collectionContents(c: Collection, available: readonly ModuleInfo[]): string[] {
  return c.modules.map((p) => available.find((m) => keyOf(m) === p.fullName)?.fullName ?? p.fullName);
}

/**
 * `strata compose restore [NAME]`: the stack a collection pinned, exactly: every module must
 * still be in the store with the same record CID, else ERR_NOT_FOUND with Lmod's w_Broken_Coll
 * wording and nothing restored (strata pins records; Lmod loads the names again). Access is
 * checked for `user` as load does.
 */
export function restoreCollection(pinned: Collection, available: readonly ModuleInfo[], user: User, name = 'default'): StackChange {
  const find = (p: PinnedModule) => available.find((m) => keyOf(m) === p.fullName && m.record === p.record);
  const changed = pinned.modules.filter((p) => !find(p));
  if (changed.length > 0) {
    throw new StrataError(
      COMPOSE_ERR.NOT_FOUND,
      `One or more modules in your ${name} collection have changed: "${changed.map((p) => p.fullName).join(' ')}".`,
      { hint: `strata restores the exact records it saved; to rebuild the collection, purge, load the modules you wish, then: strata compose save ${name}` },
    );
  }
  const mods = pinned.modules.map((p) => find(p)!);
  for (const m of mods) checkAccess(m, user);
  const t = new Table(
    {
      stackVersion: 1,
      modules: mods.map((m, i) => ({ fullName: m.fullName, key: keyOf(m), ...(pinned.modules[i]!.auto ? { auto: true } : {}) })),
    },
    available,
  );
  const messages = [`Restoring modules from user's ${name}`];
  if (pinned.modules.length === 0) messages.push(`You have no modules loaded because the collection "${name}" is empty!`);
  return { stack: t.toStack(), messages };
}
