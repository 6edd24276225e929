/**
 * Module records. Schema: spec/module-record.schema.json. A record is a canonical-JSON blob,
 * named by CIDv1(json, sha2-256); the index maps the module's store name (`fullNameOf`) →
 * record CID. The Lmod fields added after the first format (whatis, keywords, hidden, sticky,
 * parents, prereq, loadAny) are optional and omitted when unset, so records written before
 * them keep their bytes and CIDs.
 */
import { printableValue } from '../native/errors.js';
import { StrataError, STORE_ERR } from './errors.js';

export interface EnvOp {
  op: 'prepend' | 'append' | 'set';
  var: string;
  value: string;
}

export interface ModuleRecord {
  recordVersion: 1;
  name: string;
  version: string;
  layer: string;
  manifest: string;
  requires: string[];
  conflicts: string[];
  family: string | null;
  env: EnvOp[];
  description: string;
  restricted: string | null;
  /** Labels carried over from an OCI image config, if the module came from one. */
  labels?: Record<string, string>;
  /** Lmod `whatis()` lines beyond the description, in order. Omitted when none. */
  whatis?: string[];
  /** Words `compose keyword` finds the module by (Lmod: a "Keywords:" whatis line). Omitted when none. */
  keywords?: string[];
  /** Left out of avail, spider and default resolution; loadable by its exact name (Lmod hidden). */
  hidden?: true;
  /** Survives `purge` and `unload` unless forced (Lmod `add_property("lmod","sticky")`). */
  sticky?: true;
  /**
   * The hierarchy (Lmod's MODULEPATH levels): the modules, outermost first, that must be loaded
   * before this build is visible, e.g. ["gcc/12.2", "mpi/openmpi-4.1"]. Omitted when none.
   */
  parents?: string[];
  /** Modules that must already be loaded; never loaded for you (Lmod `prereq`). Omitted when none. */
  prereq?: string[];
  /** Groups of alternatives: the first one loaded or loadable is used (Lmod `load_any`). Omitted when none. */
  loadAny?: string[][];
}

/** The optional Lmod fields of a record, as import takes them. */
export type RecordExtras = Pick<ModuleRecord, 'whatis' | 'keywords' | 'hidden' | 'sticky' | 'parents' | 'prereq' | 'loadAny'>;

/**
 * The optional fields to put in a record: empty lists and false flags are left out, so a module
 * imported without them has the same record (and CID) as before these fields existed.
 */
export function recordExtras(o: {
  whatis?: string[];
  keywords?: string[];
  hidden?: boolean;
  sticky?: boolean;
  parents?: string[];
  prereq?: string[];
  loadAny?: string[][];
}): RecordExtras {
  const out: RecordExtras = {};
  if (o.whatis && o.whatis.length > 0) out.whatis = [...o.whatis];
  if (o.keywords && o.keywords.length > 0) out.keywords = [...o.keywords];
  if (o.hidden) out.hidden = true;
  if (o.sticky) out.sticky = true;
  if (o.parents && o.parents.length > 0) out.parents = [...o.parents];
  if (o.prereq && o.prereq.length > 0) out.prereq = [...o.prereq];
  const groups = (o.loadAny ?? []).filter((g) => g.length > 0);
  if (groups.length > 0) out.loadAny = groups.map((g) => [...g]);
  return out;
}

/**
 * Lmod's rule: the last path component is the version. `openmpi/4.1.5` → openmpi, 4.1.5;
 * `mpi/openmpi-2` → mpi, openmpi-2; a single component is a name without a version.
 */
export function splitFullName(fullName: string): { name: string; version: string } {
  const i = fullName.lastIndexOf('/');
  return i < 0 ? { name: fullName, version: '' } : { name: fullName.slice(0, i), version: fullName.slice(i + 1) };
}

/**
 * The module's store name, the key of the index: `name/version`, behind its hierarchy parents
 * when it has some (`gcc/12.2/mpi/openmpi-4.1/hdf5/1.14` for hdf5/1.14 built under gcc/12.2
 * and mpi/openmpi-4.1), as Lmod's tree puts a build in its parents' directory.
 */
export function fullNameOf(r: { name: string; version: string; parents?: readonly string[] }): string {
  const own = r.version === '' ? r.name : `${r.name}/${r.version}`;
  return r.parents && r.parents.length > 0 ? `${r.parents.join('/')}/${own}` : own;
}

const NAME = /^[A-Za-z0-9_+][A-Za-z0-9_.+@-]*(\/[A-Za-z0-9_+][A-Za-z0-9_.+@-]*)*$/;
const VAR = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function checkFullName(fullName: string): void {
  if (!NAME.test(fullName) || fullName.length > 200) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `'${fullName}' is not a module name`, {
      hint: 'use name/version, e.g. openmpi/4.1.5 or mpi/openmpi-2 (letters, digits, _ . + @ -)',
    });
  }
}

/** Parses `VAR=VALUE` from --prepend/--append/--setenv. */
export function parseEnvOp(op: EnvOp['op'], text: string): EnvOp {
  const eq = text.indexOf('=');
  const name = eq < 0 ? '' : text.slice(0, eq);
  if (!VAR.test(name)) throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `'${text}' is not VAR=VALUE`, { hint: 'e.g. --prepend PATH=/opt/openmpi/bin' });
  return { op, var: name, value: text.slice(eq + 1) };
}

/**
 * An environment operation's variable name must be a POSIX name and its value text without
 * NUL: env files strata writes are then data (the value is single-quoted), never commands.
 * Returns why `e` is not one, or undefined.
 */
export function envOpProblem(e: unknown): string | undefined {
  const o = e as EnvOp | undefined;
  if (!o || typeof o !== 'object' || !['prepend', 'append', 'set'].includes(o.op)) return 'an environment operation is not prepend, append or set';
  if (typeof o.var !== 'string' || !VAR.test(o.var)) return `environment variable name ${printableValue(o.var)} is not a POSIX name`;
  if (typeof o.value !== 'string' || o.value.includes('\0')) return `the value of ${o.var} is not text`;
  return undefined;
}

export function validateRecord(v: unknown, where: string): ModuleRecord {
  const r = v as ModuleRecord;
  const bad = (why: string) => new StrataError(STORE_ERR.RECORD_INVALID, `record ${where} is not a strata module record (${why})`);
  if (!r || typeof r !== 'object') throw bad('not an object');
  if (r.recordVersion !== 1) throw bad(`recordVersion ${String(r.recordVersion)}`);
  for (const k of ['name', 'version', 'layer', 'manifest', 'description'] as const) if (typeof r[k] !== 'string') throw bad(`${k} missing`);
  if (!Array.isArray(r.requires) || !Array.isArray(r.conflicts) || !Array.isArray(r.env)) throw bad('lists missing');
  for (const e of r.env) {
    const why = envOpProblem(e);
    if (why) throw bad(why);
  }
  const strings = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string');
  for (const k of ['whatis', 'keywords', 'parents', 'prereq'] as const) {
    if (r[k] !== undefined && !strings(r[k])) throw bad(`${k} is not a list of strings`);
  }
  if (r.loadAny !== undefined && !(Array.isArray(r.loadAny) && r.loadAny.length > 0 && r.loadAny.every(strings))) throw bad('loadAny is not a list of lists');
  for (const k of ['hidden', 'sticky'] as const) if (r[k] !== undefined && r[k] !== true) throw bad(`${k} is not true`);
  return r;
}
