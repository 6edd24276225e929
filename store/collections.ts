/**
 * Saved collections (`strata compose save`): a stack pinned to record CIDs, so `restore` gets
 * the same bytes back. The store owns the document: it writes it, validates it on every read,
 * and keeps the records it pins alive across gc. Schema: spec/stack.schema.json#/$defs/collection.
 *
 *   { "collectionVersion": 1, "modules": [ { "fullName", "record", "auto"? } … ] }
 */
import { StrataError, STORE_ERR } from './errors.js';

/** A stack module pinned to the record it resolved to when the collection was saved. */
export interface PinnedModule {
  fullName: string;
  /** CID of the module record at save time. */
  record: string;
  /** Loaded as another module's requirement, not asked for. */
  auto?: boolean;
}

export interface Collection {
  collectionVersion: 1;
  modules: PinnedModule[];
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+@-]*$/;

/** Collection names: a word (letters, digits, `_ . + @ -`), as Lmod allows in ~/.lmod.d. */
export function checkCollectionName(name: string): void {
  if (!NAME.test(name) || name.length > 100) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `'${name}' is not a collection name`, {
      hint: 'use letters, digits and _ . + @ -, e.g. default or gpu-2024',
    });
  }
}

/** Parses and validates a stored collection. Throws ERR_RECORD_INVALID naming it. */
export function parseCollection(text: string, name: string): Collection {
  const bad = (why: string) =>
    new StrataError(STORE_ERR.RECORD_INVALID, `collection "${name}" is not a strata collection: ${why}`, {
      hint: `save it again: strata compose save ${name}`,
    });
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad('not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('not a JSON object');
  const o = v as Record<string, unknown>;
  if (o.collectionVersion !== 1) throw bad(`collectionVersion is ${JSON.stringify(o.collectionVersion)}, this strata reads 1`);
  if (!Array.isArray(o.modules) || Object.keys(o).some((k) => k !== 'collectionVersion' && k !== 'modules')) {
    throw bad('expected {collectionVersion, modules}');
  }
  const modules = o.modules.map((e, i): PinnedModule => {
    const m = e as Record<string, unknown>;
    if (typeof m !== 'object' || m === null || typeof m.fullName !== 'string' || m.fullName === '' || typeof m.record !== 'string' || m.record === '') {
      throw bad(`modules[${i}] needs fullName and record`);
    }
    if (Object.keys(m).some((k) => !['fullName', 'record', 'auto'].includes(k)) || (m.auto !== undefined && typeof m.auto !== 'boolean')) {
      throw bad(`modules[${i}] has unknown keys or a bad auto`);
    }
    return { fullName: m.fullName, record: m.record, ...(m.auto === true ? { auto: true } : {}) };
  });
  return { collectionVersion: 1, modules };
}

/** The stored text of a collection: compact JSON, keys in a fixed order. */
export function serializeCollection(c: Collection): string {
  return JSON.stringify({ collectionVersion: 1, modules: c.modules.map((m) => ({ fullName: m.fullName, record: m.record, ...(m.auto ? { auto: true } : {}) })) });
}
