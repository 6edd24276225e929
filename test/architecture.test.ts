/**
 * The floors of spec/architecture.md, read from the source: every relative import (type-only
 * and dynamic ones included) of every module under native/, store/, compose/ and cli/.
 * native/ imports nothing above it, store/ nothing above store/, compose/ and cli/ nothing
 * of store/ but its interface (store/index.ts), and no module reaches itself through its
 * imports.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FLOORS = ['native', 'store', 'compose', 'cli'] as const;
type Floor = (typeof FLOORS)[number];

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Relative module specifiers of a source: static (value or type) imports, re-exports, import('…'). */
function specifiers(code: string): string[] {
  const found: string[] = [];
  const patterns = [/\b(?:import|export)\b[^'"`;]*?\bfrom\s*['"](\.[^'"]+)['"]/g, /\bimport\s*\(\s*['"](\.[^'"]+)['"]\s*\)/g, /^\s*import\s*['"](\.[^'"]+)['"]/gm];
  for (const re of patterns) for (const m of code.matchAll(re)) found.push(m[1]!);
  return found;
}

/** The graph: module (path from the repo root, .ts) → the modules it imports. */
function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const floor of FLOORS) {
    for (const file of sources(join(root, floor))) {
      const from = relative(root, file);
      const to = specifiers(readFileSync(file, 'utf8')).map((s) => relative(root, resolve(dirname(file), s)).replace(/\.js$/, '.ts'));
      g.set(from, to);
    }
  }
  return g;
}

const floorOf = (p: string): Floor | undefined => FLOORS.find((f) => p.startsWith(`${f}/`));
const test = suite('architecture: floors and imports');
const g = graph();

test('the import reader sees the modules and their imports', () => {
  assert.ok(g.size > 100, `${g.size} modules`);
  assert.ok(g.get('cli/main.ts')!.length > 3);
  assert.ok(g.get('store/index.ts')!.includes('store/reader.ts'));
  assert.equal(specifiers("import type { A } from './a.js';\nexport { b } from '../b.js';\nconst c = await import('./c.js');\nimport './d.js';"), ['./a.js', '../b.js', './c.js', './d.js']);
});

test('each floor imports only the floors below it; compose/ and cli/ reach store/ only through store/index.ts', () => {
  const wrong: string[] = [];
  for (const [from, tos] of g) {
    const f = floorOf(from)!;
    for (const to of tos) {
      const t = floorOf(to);
      if (!t) continue; // package.json and the like
      if (FLOORS.indexOf(t) > FLOORS.indexOf(f)) wrong.push(`${from} → ${to} (up from ${f} to ${t})`);
      else if ((f === 'compose' || f === 'cli') && t === 'store' && to !== 'store/index.ts') wrong.push(`${from} → ${to} (past the store's interface)`);
    }
  }
  assert.equal(wrong, []);
});

test('no import cycle', () => {
  // Tarjan's strongly connected components; any component of more than one module is a cycle.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of g.get(v) ?? []) {
      if (!g.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || g.get(v)!.includes(v)) cycles.push(comp.sort());
    }
  };
  for (const v of g.keys()) if (!idx.has(v)) visit(v);
  assert.equal(cycles, []);
});

test.run();
