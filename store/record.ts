/**
 * Module records. Schema: spec/module-record.schema.json. A record is a canonical-JSON blob,
 * named by CIDv1(json, sha2-256); the index maps fullName → record CID.
 */
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
}

/**
 * Lmod's rule: the last path component is the version. `openmpi/4.1.5` → openmpi, 4.1.5;
 * `mpi/openmpi-2` → mpi, openmpi-2; a single component is a name without a version.
 */
export function splitFullName(fullName: string): { name: string; version: string } {
  const i = fullName.lastIndexOf('/');
  return i < 0 ? { name: fullName, version: '' } : { name: fullName.slice(0, i), version: fullName.slice(i + 1) };
}

export function fullNameOf(r: { name: string; version: string }): string {
  return r.version === '' ? r.name : `${r.name}/${r.version}`;
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

export function validateRecord(v: unknown, where: string): ModuleRecord {
  const r = v as ModuleRecord;
  const bad = (why: string) => new StrataError(STORE_ERR.RECORD_INVALID, `record ${where} is not a strata module record (${why})`);
  if (!r || typeof r !== 'object') throw bad('not an object');
  if (r.recordVersion !== 1) throw bad(`recordVersion ${String(r.recordVersion)}`);
  for (const k of ['name', 'version', 'layer', 'manifest', 'description'] as const) if (typeof r[k] !== 'string') throw bad(`${k} missing`);
  if (!Array.isArray(r.requires) || !Array.isArray(r.conflicts) || !Array.isArray(r.env)) throw bad('lists missing');
  return r;
}
