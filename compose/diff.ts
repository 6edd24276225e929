/**
 * `strata compose diff A B`: what differs between two locks (a stack is compared through the
 * lock it resolves to). Pure: takes two locks, returns the differences.
 *
 * Modules are matched by store name; one that left and one that came with the same module name
 * (a version change, or another build under new hierarchy parents) are reported as changed, as
 * is the same module with another record (re-imported content). The environment is compared
 * per variable as the composed value, the variable's value before the stack written `$VAR`.
 */
import type { EnvOp } from '../store/index.js';
import type { Lock } from './lock.js';
import { splitFullName } from './version-order.js';

export interface ModuleChange {
  from: string;
  to: string;
  fromRecord: string;
  toRecord: string;
}

export interface EnvChange {
  var: string;
  /** The composed value in A; null when A leaves the variable alone. */
  from: string | null;
  to: string | null;
}

export interface LockDiff {
  /** Store names only in B, in B's order. */
  added: string[];
  /** Store names only in A, in A's order. */
  removed: string[];
  changed: ModuleChange[];
  /** Both hold the same modules in another order (layer and PATH order differ). */
  reordered: boolean;
  env: EnvChange[];
  same: boolean;
}

/** Each variable's composed value: `$VAR` stands for its value before the stack. */
export function composedEnv(env: readonly EnvOp[]): Map<string, string> {
  const parts = new Map<string, string[]>();
  for (const e of env) {
    const cur = parts.get(e.var) ?? [`$${e.var}`];
    if (e.op === 'set') parts.set(e.var, [e.value]);
    else if (e.op === 'prepend') parts.set(e.var, [e.value, ...cur]);
    else parts.set(e.var, [...cur, e.value]);
  }
  return new Map([...parts].map(([k, v]) => [k, v.join(':')]));
}

/**
 * The differences from A to B. `nameOf` gives a module's name (without version) for pairing a
 * removed module with an added one; by default the part of the store name before its last '/'.
 */
export function diffLocks(a: Lock, b: Lock, nameOf: (fullName: string, record: string) => string = (f) => splitFullName(f).name): LockDiff {
  const inA = new Map(a.modules.map((m) => [m.fullName, m]));
  const inB = new Map(b.modules.map((m) => [m.fullName, m]));
  const changed: ModuleChange[] = [];
  for (const m of a.modules) {
    const o = inB.get(m.fullName);
    if (o && o.record !== m.record) changed.push({ from: m.fullName, to: o.fullName, fromRecord: m.record, toRecord: o.record });
  }
  let removed = a.modules.filter((m) => !inB.has(m.fullName));
  let added = b.modules.filter((m) => !inA.has(m.fullName));
  for (const r of [...removed]) {
    const n = nameOf(r.fullName, r.record);
    const ad = added.find((x) => nameOf(x.fullName, x.record) === n);
    if (!ad) continue;
    changed.push({ from: r.fullName, to: ad.fullName, fromRecord: r.record, toRecord: ad.record });
    removed = removed.filter((x) => x !== r);
    added = added.filter((x) => x !== ad);
  }
  const common = (l: Lock) => l.modules.map((m) => m.fullName).filter((f) => inA.has(f) && inB.has(f));
  const reordered = common(a).join('\n') !== common(b).join('\n');
  const ea = composedEnv(a.env);
  const eb = composedEnv(b.env);
  const vars = [...new Set([...ea.keys(), ...eb.keys()])].sort();
  const env = vars.filter((v) => ea.get(v) !== eb.get(v)).map((v) => ({ var: v, from: ea.get(v) ?? null, to: eb.get(v) ?? null }));
  const same = added.length === 0 && removed.length === 0 && changed.length === 0 && !reordered && env.length === 0;
  return { added: added.map((m) => m.fullName), removed: removed.map((m) => m.fullName), changed, reordered, env, same };
}

function short(cid: string): string {
  return cid.length > 20 ? `${cid.slice(0, 16)}…` : cid;
}

/** The diff for people: `+` added, `-` removed, `~` changed, then the environment. */
export function formatDiff(d: LockDiff, a: string, b: string): string[] {
  if (d.same) return [`no differences between ${a} and ${b}`];
  const out = [`--- ${a}`, `+++ ${b}`];
  if (d.added.length + d.removed.length + d.changed.length > 0 || d.reordered) out.push('modules:');
  for (const m of d.removed) out.push(`  - ${m}`);
  for (const m of d.added) out.push(`  + ${m}`);
  for (const c of d.changed) {
    out.push(c.from === c.to ? `  ~ ${c.from}  (record ${short(c.fromRecord)} => ${short(c.toRecord)})` : `  ~ ${c.from} => ${c.to}`);
  }
  if (d.reordered) out.push('  (the modules both hold are in another order)');
  if (d.env.length > 0) out.push('env:');
  for (const e of d.env) out.push(`  ${e.var}: ${e.from ?? '(unset)'} => ${e.to ?? '(unset)'}`);
  return out;
}
