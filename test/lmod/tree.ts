/**
 * One module tree, described once, written twice: as Lua modulefiles for the real Lmod
 * (a MODULEPATH hierarchy: Core, then one directory level per parent) and as strata imports
 * (`store import NAME DIR --under … --requires … --prepend …`). Every module sets environment
 * values of its own, so PATH order tells the two tools' load orders apart.
 */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface ModuleDesc {
  /** name/version as users write it. */
  name: string;
  /** Hierarchy parents, outermost first. */
  under?: string[];
  family?: string;
  requires?: string[];
  prereq?: string[];
  loadAny?: string[][];
  conflicts?: string[];
  description?: string;
  whatis?: string[];
  keywords?: string[];
  hidden?: boolean;
  sticky?: boolean;
  /** Marked default of its name (Lmod: a `default` symlink; strata: --default). */
  default?: boolean;
  /** Extra env ops beyond the PATH entry every module gets. */
  env?: Array<['prepend' | 'append' | 'set', string, string]>;
}

/** The store name: parents, then name/version (as strata indexes a hierarchy build). */
export function keyOf(m: ModuleDesc): string {
  return [...(m.under ?? []), m.name].join('/');
}

/** Every module's environment: its own PATH entry first, then its extras. */
export function envOf(m: ModuleDesc): Array<['prepend' | 'append' | 'set', string, string]> {
  // strata's import takes --prepend, --append, then --setenv: the modulefiles use that order too.
  const rank = { prepend: 0, append: 1, set: 2 };
  const ops: Array<['prepend' | 'append' | 'set', string, string]> = [['prepend', 'PATH', `/opt/${keyOf(m).replace(/\//g, '_')}/bin`], ...(m.env ?? [])];
  return ops.map((o, i) => [o, i] as const).sort((a, b) => rank[a[0][0]] - rank[b[0][0]] || a[1] - b[1]).map(([o]) => o);
}

/** Variables the tree touches: the ones compared after every step. */
export function varsOf(tree: readonly ModuleDesc[]): string[] {
  return [...new Set(tree.flatMap((m) => envOf(m).map(([, v]) => v)))].sort();
}

const GCC = (v: string) => ({ family: 'compiler', description: `GNU compilers ${v}`, keywords: ['compiler'] });

export const TREE: ModuleDesc[] = [
  // --- the core --------------------------------------------------------------------------
  { name: 'gcc/11.4', ...GCC('11.4') },
  { name: 'gcc/12.3', ...GCC('12.3') },
  { name: 'intel/2023.1', family: 'compiler', description: 'Intel oneAPI compilers' },
  { name: 'zlib/1.3', description: 'compression library' },
  { name: 'zlib/1.2.13', description: 'compression library' },
  { name: 'fftw/3.3', requires: ['zlib'] },
  { name: 'netcdf/4.9', requires: ['zlib', 'gcc/12.3'], env: [['append', 'MANPATH', '/opt/netcdf/man']] },
  { name: 'legacy/1', requires: ['gcc/11.4'] },
  { name: 'python/3.11' },
  { name: 'python/3.12' },
  { name: 'pytool/2', requires: ['python/3.11'] },
  { name: 'openblas/0.3', family: 'blas' },
  { name: 'mkl/2024', family: 'blas' },
  { name: 'numpy/1.26', requires: ['openblas'] },
  { name: 'cuda/12.2', conflicts: ['rocm'] },
  { name: 'rocm/6.0' },
  { name: 'tools/a/2.0' },
  { name: 'tools/b/1.0' },
  { name: 'site/1', sticky: true, description: 'site settings', env: [['set', 'SITE_NAME', 'example']] },
  { name: 'debug/1.0' },
  { name: 'debug/2.0', hidden: true },
  { name: 'plugin/1', prereq: ['zlib'] },
  { name: 'viz/1', loadAny: [['nosuch', 'rocm', 'zlib']] },
  {
    name: 'lic/1',
    description: 'a licence server',
    whatis: ['URL: https://example.org/lic'],
    keywords: ['licence', 'flexlm'],
    env: [['set', 'LIC_SERVER', 'port@lic.example.org'], ['append', 'MANPATH', '/opt/lic/man']],
  },
  { name: 'cmake/3.27', default: true, env: [['set', 'CMAKE_ROOT', '/opt/cmake-3.27']] },
  { name: 'cmake/3.28', env: [['set', 'CMAKE_ROOT', '/opt/cmake-3.28']] },

  // --- the hierarchy: compiler → MPI → HDF5, two of each ------------------------------------
  { name: 'mpi/openmpi-4.1', under: ['gcc/12.3'], family: 'mpi', description: 'Open MPI' },
  { name: 'mpi/mpich-4.1', under: ['gcc/12.3'], family: 'mpi', description: 'MPICH' },
  { name: 'mpi/openmpi-4.1', under: ['gcc/11.4'], family: 'mpi', description: 'Open MPI' },
  { name: 'mpi/mpich-4.1', under: ['gcc/11.4'], family: 'mpi', description: 'MPICH' },
  { name: 'boost/1.83', under: ['gcc/12.3'], description: 'C++ libraries' },
  { name: 'hdf5/1.14', under: ['gcc/12.3', 'mpi/openmpi-4.1'], description: 'HDF5 with MPI' },
  { name: 'hdf5/1.14', under: ['gcc/12.3', 'mpi/mpich-4.1'], description: 'HDF5 with MPI' },
  { name: 'hdf5/1.14', under: ['gcc/11.4', 'mpi/openmpi-4.1'], description: 'HDF5 with MPI' },
  { name: 'hdf5/1.12', under: ['gcc/11.4', 'mpi/openmpi-4.1'], description: 'HDF5 with MPI' },
  { name: 'h5tool/1', under: ['gcc/12.3', 'mpi/openmpi-4.1'], requires: ['hdf5'] },
];

/** The directory a module's Lua file lives in. */
function dirOf(root: string, m: ModuleDesc): string {
  const under = m.under ?? [];
  return under.length === 0 ? join(root, 'Core') : join(root, `L${under.length}`, ...under);
}

const lua = (s: string) => JSON.stringify(s);

/**
 * Writes the tree as Lmod modulefiles under `root`; returns the MODULEPATH to start from.
 * Statement order, which strata applies in the same order: family, sticky, whatis, conflict,
 * prereq, depends_on, load_any, env, then the MODULEPATH entry of the level it opens.
 */
export function writeLuaTree(root: string, tree: readonly ModuleDesc[]): string {
  const rc = new Map<string, string[]>();
  for (const m of tree) {
    const dir = dirOf(root, m);
    const file = join(dir, `${m.name}.lua`);
    mkdirSync(dirname(file), { recursive: true });
    const level = [...(m.under ?? []), m.name];
    const opens = tree.some((c) => (c.under ?? []).join('/') === level.join('/'));
    const whatis = [...(m.description ? [`Description: ${m.description}`] : []), ...(m.whatis ?? []), ...(m.keywords ? [`Keywords: ${m.keywords.join(', ')}`] : [])];
    const lines = [
      ...(m.family ? [`family(${lua(m.family)})`] : []),
      ...(m.sticky ? ['add_property("lmod","sticky")'] : []),
      ...whatis.map((w) => `whatis(${lua(w)})`),
      ...(m.conflicts ?? []).map((c) => `conflict(${lua(c)})`),
      ...(m.prereq ?? []).map((c) => `prereq(${lua(c)})`),
      ...(m.requires ?? []).map((c) => `depends_on(${lua(c)})`),
      ...(m.loadAny ?? []).map((g) => `load_any(${g.map(lua).join(',')})`),
      ...envOf(m).map(([op, v, val]) => `${{ prepend: 'prepend_path', append: 'append_path', set: 'setenv' }[op]}(${lua(v)},${lua(val)})`),
      ...(opens ? [`prepend_path("MODULEPATH",${lua(join(root, `L${level.length}`, ...level))})`] : []),
    ];
    writeFileSync(file, lines.join('\n') + '\n');
    if (m.default) symlinkSync(`${m.name.split('/').pop()}.lua`, join(dirname(file), 'default'));
    if (m.hidden) rc.set(dir, [...(rc.get(dir) ?? []), `hide_version(${lua(m.name)})`]);
  }
  for (const [dir, lines] of rc) writeFileSync(join(dir, '.modulerc.lua'), lines.join('\n') + '\n');
  return join(root, 'Core');
}

/** The `strata store import` arguments after the source for one module. */
export function importFlags(m: ModuleDesc): string[] {
  const out: string[] = [];
  for (const p of m.under ?? []) out.push('--under', p);
  if (m.family) out.push('--family', m.family);
  for (const r of m.requires ?? []) out.push('--requires', r);
  for (const r of m.prereq ?? []) out.push('--prereq', r);
  for (const g of m.loadAny ?? []) out.push('--load-any', g.join(','));
  for (const c of m.conflicts ?? []) out.push('--conflicts', c);
  if (m.description) out.push('--description', m.description);
  for (const w of m.whatis ?? []) out.push('--whatis', w);
  for (const k of m.keywords ?? []) out.push('--keyword', k);
  if (m.hidden) out.push('--hidden');
  if (m.sticky) out.push('--sticky');
  if (m.default) out.push('--default');
  for (const [op, v, val] of envOf(m)) out.push(`--${op === 'set' ? 'setenv' : op}`, `${v}=${val}`);
  return out;
}
