/**
 * The stack (strata.json) and the Lmod operations on it: add, rm, swap, purge, the layer
 * order, and pinned collections (save/restore). Pure functions: each takes a stack and the
 * available modules and returns a new stack plus the messages to print; on an error it
 * throws and the caller's stack is untouched. Schema: spec/stack.schema.json; rules and
 * message wording: spec/compose.md.
 */
import type { Collection, PinnedModule } from '../store/index.js';
import { StrataError, COMPOSE_ERR } from './errors.js';

export type { Collection, PinnedModule };
import { checkAccess, matchesSpec, resolveSpec, unknownModules, mayLoad, type ModuleInfo, type User } from './resolve.js';
import { splitFullName } from './version-order.js';

/** One line of strata.json. */
export interface StackEntry {
  /** Exact fullName the spec resolved to when it was added. */
  fullName: string;
  /** true when the module was pulled in by another module's `requires`, not asked for. */
  auto?: boolean;
  /** fullNames of the stack modules whose `requires` this entry satisfies (informative; recomputed on every change). */
  requiredBy?: string[];
}

/**
 * strata.json: what the user asked for, in the order they asked. Requirements pulled in
 * automatically sit before the module that needed them, marked `auto`.
 */
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
// strata.json I/O helpers (text in, text out; the CLI reads and writes the file)

function invalid(why: string): StrataError {
  return new StrataError(COMPOSE_ERR.STACK_INVALID, `strata.json is not a strata stack file: ${why}`, {
    hint: 'fix it, or remove it and add the modules again',
  });
}

/** Validates a parsed strata.json (see spec/stack.schema.json). Throws ERR_STACK_INVALID. */
export function validateStack(v: unknown): StackFile {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid('not a JSON object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'stackVersion' && k !== 'modules') throw invalid(`unknown key "${k}"`);
  if (o.stackVersion !== 1) throw invalid(`stackVersion is ${JSON.stringify(o.stackVersion)}, this strata reads 1`);
  if (!Array.isArray(o.modules)) throw invalid('"modules" is not an array');
  const seen = new Set<string>();
  const names = new Set<string>();
  const modules = o.modules.map((e, i): StackEntry => {
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw invalid(`modules[${i}] is not an object`);
    const m = e as Record<string, unknown>;
    for (const k of Object.keys(m)) if (!['fullName', 'auto', 'requiredBy'].includes(k)) throw invalid(`modules[${i}] has unknown key "${k}"`);
    if (typeof m.fullName !== 'string' || m.fullName === '') throw invalid(`modules[${i}].fullName is not a module name`);
    if (m.auto !== undefined && typeof m.auto !== 'boolean') throw invalid(`modules[${i}].auto is not true/false`);
    if (m.requiredBy !== undefined && (!Array.isArray(m.requiredBy) || m.requiredBy.some((r) => typeof r !== 'string'))) {
      throw invalid(`modules[${i}].requiredBy is not a list of names`);
    }
    if (seen.has(m.fullName)) throw invalid(`${m.fullName} is listed twice`);
    const name = splitFullName(m.fullName).name;
    if (names.has(name)) throw invalid(`two versions of ${name} are listed (one name at a time)`);
    seen.add(m.fullName);
    names.add(name);
    const out: StackEntry = { fullName: m.fullName };
    if (m.auto === true) out.auto = true;
    if (Array.isArray(m.requiredBy) && m.requiredBy.length > 0) out.requiredBy = [...(m.requiredBy as string[])];
    return out;
  });
  return { stackVersion: 1, modules };
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
  const modules = stack.modules.map((e) => {
    const o: StackEntry = { fullName: e.fullName };
    if (e.auto) o.auto = true;
    if (e.requiredBy && e.requiredBy.length > 0) o.requiredBy = [...e.requiredBy];
    return o;
  });
  return JSON.stringify({ stackVersion: 1, modules }, null, 2) + '\n';
}

// ---------------------------------------------------------------------------------------
// Working state shared by the operations

interface Entry {
  fullName: string;
  auto: boolean;
}

class Work {
  entries: Entry[];
  private readonly byFullName = new Map<string, ModuleInfo>();

  constructor(stack: StackFile, readonly available: readonly ModuleInfo[]) {
    this.entries = stack.modules.map((e) => ({ fullName: e.fullName, auto: e.auto === true }));
    for (const m of available) if (!this.byFullName.has(m.fullName)) this.byFullName.set(m.fullName, m);
  }

  /** The record of a stack entry; a stub (no requires/conflicts) when it left the store. */
  info(fullName: string): ModuleInfo {
    const m = this.byFullName.get(fullName);
    if (m) return m;
    const { name, version } = splitFullName(fullName);
    return { fullName, name, version, record: '', requires: [], conflicts: [], family: null, restricted: null, isDefault: false };
  }

  find(pred: (m: ModuleInfo) => boolean): Entry | undefined {
    return this.entries.find((e) => pred(this.info(e.fullName)));
  }

  drop(e: Entry): void {
    this.entries = this.entries.filter((x) => x !== e);
  }

  /** Entries (other than e) with a requires spec that e satisfies. */
  requirers(e: Entry): Entry[] {
    const me = this.info(e.fullName);
    return this.entries.filter((x) => x !== e && this.info(x.fullName).requires.some((r) => matchesSpec(r, me)));
  }

  /** Drops auto entries nobody requires any more, repeatedly; returns them in stack order. */
  collect(): string[] {
    const at = new Map(this.entries.map((e, i) => [e.fullName, i]));
    const gone: string[] = [];
    for (;;) {
      const orphans = this.entries.filter((e) => e.auto && this.requirers(e).length === 0);
      if (orphans.length === 0) break;
      for (const o of orphans) {
        gone.push(o.fullName);
        this.drop(o);
      }
    }
    return gone.sort((a, b) => at.get(a)! - at.get(b)!);
  }

  /** Lmod's w_MissingModules warning for requires no loaded module satisfies, or none. */
  missingWarning(): string | undefined {
    const missing = new Map<string, string[]>();
    for (const x of this.entries) {
      for (const r of this.info(x.fullName).requires) {
        if (this.find((m) => matchesSpec(r, m))) continue;
        const list = missing.get(r) ?? [];
        list.push(x.fullName);
        missing.set(r, list);
      }
    }
    if (missing.size === 0) return undefined;
    const keys = [...missing.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const items = keys.map((k) => `${k} (required by: ${missing.get(k)!.join(', ')})`);
    return `The following dependent module(s) are not currently loaded: ${items.join(', ')}`;
  }

  result(messages: string[]): StackChange {
    const modules = this.entries.map((e): StackEntry => {
      const out: StackEntry = { fullName: e.fullName };
      if (e.auto) out.auto = true;
      const by = this.requirers(e).map((x) => x.fullName);
      if (by.length > 0) out.requiredBy = by;
      return out;
    });
    return { stack: { stackVersion: 1, modules }, messages };
  }
}

function cycleError(path: readonly string[]): StrataError {
  return new StrataError(COMPOSE_ERR.REQUIRE_CYCLE, `Module requirements form a cycle: ${path.join(' -> ')}`, {
    hint: 're-import one of these modules without the requirement that closes the loop',
  });
}

/** Lmod's m_Reload_Version_Chng report: sorted, numbered, one per line. */
function versionChangeMessage(changes: string[]): string {
  const sorted = [...changes].sort();
  return [
    'The following have been reloaded with a version change:',
    ...sorted.map((c, i) => `${String(i + 1).padStart(3)}) ${c}`),
  ].join('\n');
}

/** Loads one resolved module into `w` with Lmod's rules. Shared by add and swap. */
class Loader {
  readonly messages: string[] = [];
  readonly changes: string[] = [];

  constructor(
    readonly w: Work,
    readonly user: User,
  ) {}

  load(m: ModuleInfo, auto: boolean, chain: readonly ModuleInfo[]): void {
    const w = this.w;
    checkAccess(m, this.user);
    const loop = chain.findIndex((c) => c.name === m.name);
    if (loop >= 0) throw cycleError([...chain.slice(loop).map((c) => c.fullName), m.fullName]);

    const exact = w.entries.find((e) => e.fullName === m.fullName);
    if (exact) {
      if (!auto) exact.auto = false;
      return;
    }

    let isAuto = auto;
    const same = w.find((x) => x.name === m.name);
    if (same) {
      // One name at a time: the new version replaces the old one (Lmod reloads it).
      this.changes.push(`${same.fullName} => ${m.fullName}`);
      isAuto = auto && same.auto;
      w.drop(same);
    }
    if (m.family !== null) {
      for (const e of [...w.entries]) {
        if (w.info(e.fullName).family !== m.family) continue;
        this.messages.push(`Lmod is automatically replacing "${e.fullName}" with "${m.fullName}".`);
        isAuto = isAuto && e.auto;
        w.drop(e);
      }
    }

    const upstream = w.entries.filter((e) => m.conflicts.some((c) => matchesSpec(c, w.info(e.fullName))));
    if (upstream.length > 0) {
      throw new StrataError(
        COMPOSE_ERR.CONFLICT,
        `Cannot load module "${m.fullName}" because these module(s) are loaded: ${upstream.map((e) => e.fullName).join(' ')}`,
        { hint: `remove them first (strata compose rm ${upstream.map((e) => e.fullName).join(' ')}), or use strata compose swap` },
      );
    }
    const downstream = w.entries.find((e) => w.info(e.fullName).conflicts.some((c) => matchesSpec(c, m)));
    if (downstream) {
      throw new StrataError(
        COMPOSE_ERR.CONFLICT,
        `Cannot load module "${m.fullName}" because this module set a conflict: "${downstream.fullName}"`,
        { hint: `remove ${downstream.fullName} first, or use strata compose swap ${downstream.fullName} ${m.fullName}` },
      );
    }

    const before = new Set(w.entries.map((e) => w.info(e.fullName).name));
    for (const r of m.requires) {
      if (w.find((x) => matchesSpec(r, x))) continue;
      let req: ModuleInfo;
      try {
        req = resolveSpec(r, w.available);
      } catch (e) {
        if (e instanceof StrataError && e.code === COMPOSE_ERR.NOT_FOUND) {
          const err = unknownModules([r]);
          throw new StrataError(err.code, `${err.message} (required by ${m.fullName})`, { hint: err.hint, cause: e });
        }
        throw e;
      }
      this.load(req, true, [...chain, m]);
    }

    // A requirement may have brought in a module of our family (a requirement of our own
    // name is a cycle, refused above): refuse with Lmod's e_Family_Conflict wording.
    const clash = m.family === null ? undefined : w.find((x) => x.family === m.family);
    if (clash) {
      throw new StrataError(
        COMPOSE_ERR.CONFLICT,
        `You can only have one ${m.family} module loaded at a time. You already have ${clash.fullName} loaded.`,
        { hint: `the requirements of ${m.fullName} load ${clash.fullName}; fix the module's requires` },
      );
    }

    w.entries.push({ fullName: m.fullName, auto: isAuto });
    if (!auto) {
      // Newly loaded requirements; one that replaced a loaded version is in the version-change report.
      const added = w.entries.map((e) => e.fullName).filter((f) => f !== m.fullName && !before.has(w.info(f).name));
      if (added.length > 0) this.messages.push(`Loading ${m.fullName}\n  Loading requirement: ${added.join(' ')}`);
    }
  }

  /** The closing messages of a command: useless requirements, version changes, missing deps. */
  finish(collected: string[], header?: string): string[] {
    const out = [...this.messages];
    if (collected.length > 0) {
      const line = `Unloading useless requirement: ${collected.join(' ')}`;
      out.push(header ? `Unloading ${header}\n  ${line}` : line);
    }
    if (this.changes.length > 0) out.push(versionChangeMessage(this.changes));
    const warn = this.w.missingWarning();
    if (warn) out.push(warn);
    return out;
  }
}

// ---------------------------------------------------------------------------------------
// Operations

/**
 * `strata compose add M…`, Lmod's `module load`: specs are resolved and loaded one after
 * the other (see spec/compose.md for each rule and its message). All or nothing: on any
 * error (unknown module, conflict, access denied, require cycle) it throws and nothing
 * changes. Adding a module already in the stack is a no-op (and makes an auto entry one
 * the user asked for).
 */
export function add(stack: StackFile, specs: readonly string[], available: readonly ModuleInfo[], user: User): StackChange {
  const w = new Work(stack, available);
  const unknown: string[] = [];
  const mods: ModuleInfo[] = [];
  for (const s of specs) {
    try {
      mods.push(resolveSpec(s, available));
    } catch (e) {
      if (e instanceof StrataError && e.code === COMPOSE_ERR.NOT_FOUND) unknown.push(s);
      else throw e;
    }
  }
  if (unknown.length > 0) throw unknownModules(unknown);
  const loader = new Loader(w, user);
  for (const m of mods) loader.load(m, false, []);
  return w.result(loader.finish(w.collect()));
}

/**
 * `strata compose rm M…`, Lmod's `module unload`. A spec removes the loaded modules it
 * names (fullName, bare name, partial version, leading part of a name). Auto entries that nothing requires any
 * more go with it, recursively. A spec that names nothing loaded is not an error: Lmod's
 * note "cannot be unloaded because it was not loaded". Removing a module that another
 * loaded module requires is allowed and warned about (Lmod's w_MissingModules).
 */
export function remove(stack: StackFile, specs: readonly string[], available: readonly ModuleInfo[]): StackChange {
  const w = new Work(stack, available);
  const messages: string[] = [];
  for (const s of specs) {
    const hits = w.entries.filter((e) => matchesSpec(s, w.info(e.fullName)));
    if (hits.length === 0) {
      messages.push(`Note: the module "${s}" cannot be unloaded because it was not loaded.`);
      continue;
    }
    for (const e of hits) {
      w.drop(e);
      const gone = w.collect();
      if (gone.length > 0) messages.push(`Unloading ${e.fullName}\n  Unloading useless requirement: ${gone.join(' ')}`);
    }
  }
  const warn = w.missingWarning();
  if (warn) messages.push(warn);
  return w.result(messages);
}

/**
 * `strata compose swap A B`, Lmod's `module swap`: unload A, load B with every add rule.
 * A must be loaded (Lmod's "Swap failed: "A" is not loaded."). Requirements of A that B
 * also needs stay where they are; the others are dropped. No version-change report for
 * the swapped pair itself (Lmod registers it as a user load). All or nothing.
 */
export function swap(
  stack: StackFile,
  a: string,
  b: string,
  available: readonly ModuleInfo[],
  user: User,
): StackChange {
  const w = new Work(stack, available);
  const old = w.find((m) => matchesSpec(a, m));
  if (!old) {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `Swap failed: "${a}" is not loaded.`, { hint: 'see strata compose list' });
  }
  const m = resolveSpec(b, available);
  w.drop(old);
  const loader = new Loader(w, user);
  loader.load(m, false, []);
  return w.result(loader.finish(w.collect(), old.fullName));
}

/** `strata compose purge`: the empty stack, silently (as Lmod's purge). */
export function purge(_stack: StackFile): StackChange {
  return { stack: emptyStack(), messages: [] };
}

/**
 * The order layers are merged in, lowest first: each module after every loaded module its
 * `requires` names, otherwise in stack order (a depth-first walk in stack order, so the
 * result depends only on the stack and the records). A require cycle throws
 * ERR_REQUIRE_CYCLE; a stack module missing from the store throws ERR_NOT_FOUND.
 * Requirements no loaded module satisfies are ignored here (add/rm warn about them).
 */
export function layerOrder(stack: StackFile, available: readonly ModuleInfo[]): ModuleInfo[] {
  const byFullName = new Map<string, ModuleInfo>();
  for (const m of available) if (!byFullName.has(m.fullName)) byFullName.set(m.fullName, m);
  const mods = stack.modules.map((e) => {
    const m = byFullName.get(e.fullName);
    if (!m) {
      throw new StrataError(COMPOSE_ERR.NOT_FOUND, `Module ${e.fullName} is in the stack but not in the store`, {
        hint: `import it again, or strata compose rm ${e.fullName}`,
      });
    }
    return m;
  });
  const out: ModuleInfo[] = [];
  const done = new Set<ModuleInfo>();
  const path: ModuleInfo[] = [];
  const visit = (m: ModuleInfo): void => {
    if (done.has(m)) return;
    const at = path.indexOf(m);
    if (at >= 0) throw cycleError([...path.slice(at), m].map((x) => x.fullName));
    path.push(m);
    for (const r of m.requires) for (const dep of mods) if (dep !== m && matchesSpec(r, dep)) visit(dep);
    path.pop();
    done.add(m);
    out.push(m);
  };
  for (const m of mods) visit(m);
  return out;
}


// ---------------------------------------------------------------------------------------
// Collections

/**
 * `strata compose save`: pins every stack module to its current record CID. Throws
 * ERR_NOT_FOUND if a stack module is no longer in the store.
 */
export function saveCollection(stack: StackFile, available: readonly ModuleInfo[]): Collection {
  const modules = stack.modules.map((e): PinnedModule => {
    const m = available.find((x) => x.fullName === e.fullName);
    if (!m) {
      throw new StrataError(COMPOSE_ERR.NOT_FOUND, `Module ${e.fullName} is in the stack but not in the store`, {
        hint: `import it again, or strata compose rm ${e.fullName}, then save`,
      });
    }
    const p: PinnedModule = { fullName: m.fullName, record: m.record };
    if (e.auto) p.auto = true;
    return p;
  });
  return { collectionVersion: 1, modules };
}

/**
 * `strata compose restore [NAME]`: the stack a collection pinned, exactly: every module
 * must still be in the store with the same record CID, else ERR_NOT_FOUND with Lmod's
 * w_Broken_Coll wording and nothing restored. Access is checked for `user` as add does.
 */
export function restoreCollection(
  pinned: Collection,
  available: readonly ModuleInfo[],
  user: User,
  name = 'default',
): StackChange {
  const changed = pinned.modules.filter((p) => !available.some((m) => m.fullName === p.fullName && m.record === p.record));
  if (changed.length > 0) {
    throw new StrataError(
      COMPOSE_ERR.NOT_FOUND,
      `One or more modules in your ${name} collection have changed: "${changed.map((p) => p.fullName).join(' ')}".`,
      { hint: `to rebuild the collection, purge, add the modules you wish, then: strata compose save ${name}` },
    );
  }
  for (const p of pinned.modules) checkAccess(available.find((m) => m.fullName === p.fullName)!, user);
  const w = new Work(
    { stackVersion: 1, modules: pinned.modules.map((p) => ({ fullName: p.fullName, ...(p.auto ? { auto: true } : {}) })) },
    available,
  );
  const messages = [`Restoring modules from user's ${name}`];
  if (pinned.modules.length === 0) messages.push(`You have no modules loaded because the collection "${name}" is empty!`);
  return w.result(messages);
}
