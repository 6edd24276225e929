/**
 * The differential scenarios: `module` command sequences run against the real Lmod and strata
 * on the tree of tree.ts. After every step the exit status, the loaded modules in order, the
 * environment and the messages must agree, unless the step names a documented difference
 * (`differs`, an id listed in spec/compose.md), in which case the test checks that Lmod still
 * behaves as documented and that strata does what it documents instead.
 */

export type Aspect = 'exit' | 'loaded' | 'env' | 'said';

export interface Difference {
  /** The id under which spec/compose.md lists the difference, e.g. "L3". */
  id: string;
  /** What differs; every other aspect must still agree. */
  aspects: Aspect[];
  /** What strata does instead (checked). */
  strata: { exit?: number; loaded?: string[]; said?: RegExp };
}

export interface ScenarioStep {
  cmd: string[];
  env?: Record<string, string>;
  /** How messages are compared: words (default on success), error (Lmod's error sentence starts strata's), show (statements), none. */
  said?: 'words' | 'error' | 'show' | 'none';
  differs?: Difference;
}

export interface Scenario {
  name: string;
  /** Suite: the flat tree or the three-level hierarchy. */
  part: 'verbs' | 'hierarchy';
  steps: ScenarioStep[];
}

/** `'load a b'` → a step; options after the command string. */
function s(cmd: string, o: Omit<ScenarioStep, 'cmd'> = {}): ScenarioStep {
  return { cmd: cmd.split(' ').filter((w) => w !== ''), ...o };
}

const V = (name: string, ...steps: ScenarioStep[]): Scenario => ({ name, part: 'verbs', steps });
const H = (name: string, ...steps: ScenarioStep[]): Scenario => ({ name, part: 'hierarchy', steps });

export const SCENARIOS: Scenario[] = [
  // ---- load, list: defaults, partial versions, names ------------------------------------
  V('load: a name loads its highest version; list and -t list', s('load zlib'), s('list'), s('-t list')),
  V('load: the marked default wins over the highest version', s('load cmake'), s('list')),
  V('load: a partial version is Lmod\'s extended default', s('load zlib/1.2'), s('load zlib/1'), s('-t list')),
  V('load: unknown modules are an error and nothing loads', s('load nosuch'), s('load zlib nosuch'), s('load zlib'), s('load rocm nosuch xx/1')),
  V('load: a leading part of a longer name is unknown; the longer names load', s('load tools'), s('load tools/a'), s('load tools/b/1.0'), s('-t list')),
  V('load: an already loaded module moves to the end of the list and the front of PATH', s('load zlib fftw'), s('load zlib'), s('unload fftw'), s('list')),
  V('load: a loaded module loaded again brings its requirements back after the others', s('load netcdf fftw'), s('load netcdf'), s('-t list')),
  V('load: a requirement loaded by the user stays when its dependant goes', s('load zlib netcdf'), s('unload netcdf'), s('load netcdf'), s('load zlib'), s('unload netcdf')),
  V('load: requirements shared by two modules go with the last of them', s('load netcdf fftw'), s('unload netcdf'), s('unload fftw')),
  V('load: a requirement replacing a loaded version is loaded for its dependant and goes with it', s('load python/3.12'), s('load pytool'), s('-t list'), s('unload pytool')),
  V('load: a requirement forcing another compiler version, in one command and in two', s('load gcc/12.3 legacy'), s('unload legacy'), s('load gcc/12.3'), s('load legacy'), s('unload legacy')),
  V('load: a requirement of a loaded family replaces the family member and goes with its dependant', s('load mkl'), s('load numpy'), s('list'), s('unload numpy')),
  V('load: a module of a loaded family replaces it, with Lmod\'s message', s('load gcc/12.3 zlib'), s('load intel'), s('list'), s('load gcc'), s('-t list')),
  V('load: another version of a loaded name, with the version-change report', s('load gcc/11.4'), s('load gcc/12.3'), s('load gcc'), s('load gcc/11.4 zlib')),

  // ---- unload ---------------------------------------------------------------------------
  V('unload: partial versions, other versions and unknown names are ignored', s('load gcc/12.3'), s('unload gcc/12'), s('unload gcc/11.4'), s('unload nosuch'), s('unload gcc'), s('list')),
  V('unload: taking a requirement away warns about its dependant', s('load netcdf'), s('unload zlib'), s('list'), s('unload gcc/12.3 netcdf')),
  V('add and rm, the aliases of load and unload, with several modules', s('add zlib rocm cmake'), s('rm rocm cmake'), s('-t list'), s('unload zlib'), s('-t list')),

  // ---- swap, purge, reset ---------------------------------------------------------------
  V('swap: within one name prints the version-change report; swap B alone', s('load gcc/11.4 zlib'), s('swap gcc gcc/12.3'), s('swap gcc/11.4'), s('-t list')),
  V('swap: a module that is not loaded fails with Lmod\'s error', s('load zlib'), s('swap nosuch rocm'), s('swap rocm cuda')),
  V('swap: a compiler away from a module that required it (no warning, as Lmod)', s('load netcdf'), s('swap gcc intel'), s('list')),
  V('purge: everything goes; an empty purge is silent', s('load netcdf rocm'), s('purge'), s('purge'), s('list')),
  V('sticky: swap replaces it', s('load site'), s('swap site zlib'), s('-t list')),
  V('sticky: purge and unload keep it unless --force', s('load site zlib'), s('purge'), s('list'), s('--force purge'), s('load site'), s('unload site'), s('--force unload site')),
  V('reset: without system defaults it fails and changes nothing', s('load zlib'), s('reset', { differs: { id: 'L9', aspects: ['said'], strata: { exit: 1, said: /^strata: The system default contains no modules/ } } }), s('-t list')),
  V(
    'reset: purge, then the system default modules',
    s('load site gcc/11.4'),
    s('reset', { env: { LMOD_SYSTEM_DEFAULT_MODULES: 'zlib:rocm' }, differs: { id: 'L9', aspects: ['said'], strata: { said: /Running "strata compose reset"/ } } }),
    s('list'),
  ),

  // ---- conflicts, prereq, load_any ------------------------------------------------------
  V('conflict: the module being loaded declares it: refused, nothing changes', s('load rocm zlib'), s('load cuda'), s('load zlib cuda'), s('-t list')),
  V(
    'conflict: declared only by the loaded module: Lmod loads, strata refuses',
    s('load cuda'),
    s('load rocm', { differs: { id: 'L1', aspects: ['exit', 'loaded', 'env', 'said'], strata: { exit: 1, loaded: ['cuda/12.2'], said: /because this module set a conflict: "cuda\/12\.2"/ } } }),
  ),
  V('prereq: refused until it is loaded; not loaded for you, not unloaded with it', s('load plugin'), s('load zlib plugin'), s('unload zlib'), s('list')),
  V('load_any: the first alternative that exists is loaded for the module and goes with it', s('load viz'), s('-t list'), s('unload viz'), s('-t list')),
  V(
    'load_any: an alternative the user loaded',
    s('load rocm viz'),
    s('unload viz', { differs: { id: 'L2', aspects: ['loaded', 'env'], strata: { loaded: ['rocm/6.0'] } } }),
  ),

  V(
    'load_any: an alternative further down the group that is loaded already',
    s('load zlib'),
    s('load viz'),
    s('-t list'),
    s('unload viz', { differs: { id: 'L2', aspects: ['loaded', 'env'], strata: { loaded: ['zlib/1.3'] } } }),
  ),
  V('load: several modules of one family in one command', s('load gcc/12.3 intel zlib'), s('-t list'), s('load openblas mkl numpy'), s('list')),
  V('load: a failure later in the command leaves everything as it was', s('load zlib'), s('load rocm gcc/12.3 cuda'), s('swap zlib nosuch'), s('-t list')),
  V(
    'whatis, show: a module that does not exist',
    s('whatis nosuch', { differs: { id: 'L7', aspects: ['said'], strata: { said: /Failed to find the following module\(s\): "nosuch" among the modules you can load now/ } } }),
    s('show nosuch', { differs: { id: 'L7', aspects: ['said'], strata: { said: /Failed to find/ } } }),
    s('whatis zlib nosuch', { differs: { id: 'L7', aspects: ['said'], strata: { said: /^strata: Failed[^\n]*\nzlib\/1.3 +: Description: compression library\n$/ } } }),
  ),
  V('save: an empty stack only with --force', s('save empty'), s('savelist'), s('--force save empty'), s('-t savelist')),
  V('load_any: the first alternative that loads, even when a later one is loaded', s('load rocm zlib'), s('load viz'), s('-t list')),
  V('avail: several patterns', s('-t avail zlib cmake'), s('-t avail nosuch rocm')),

  // ---- hidden ---------------------------------------------------------------------------
  V('hidden: never the default, loadable by its full name, shown with --show_hidden', s('load debug'), s('load debug/2.0'), s('-t avail debug'), s('--show_hidden -t avail debug'), s('--show_hidden avail debug'), s('avail debug')),

  // ---- avail, overview -----------------------------------------------------------------
  V('avail: everything, tersely', s('-t avail')),
  V('avail: patterns are case-insensitive substrings', s('-t avail mpi'), s('-t avail GCC'), s('-t avail zlib/1'), s('-t avail tools/'), s('avail nosuch')),
  V('avail: markers and legend', s('load zlib cmake/3.28'), s('avail zlib'), s('avail cmake'), s('avail gcc')),
  V(
    'avail: a glob',
    s('-t avail cm*', { differs: { id: 'L3', aspects: ['said'], strata: { said: /cmake\/3\.27/ } } }),
    s('-t avail *python*', { differs: { id: 'L3', aspects: ['said'], strata: { said: /python\/3\.11/ } } }),
  ),
  V('overview: names and their number of versions', s('overview')),

  // ---- spider, whatis, keyword, show ----------------------------------------------------
  V('spider: no argument lists everything; -t too', s('spider'), s('-t spider')),
  V('spider: a name with versions, a name with one, a full name', s('spider gcc'), s('spider fftw'), s('spider zlib/1.3'), s('spider cmake')),
  V('spider: nothing found is an error', s('spider zzz'), s('spider gcc/9')),
  V('whatis: description, extra lines and keywords', s('whatis lic'), s('whatis gcc'), s('whatis zlib/1.2.13 fftw')),
  V('keyword: searches names and whatis text', s('keyword flexlm'), s('-t keyword compiler'), s('keyword zzzz')),
  V('show: what loading a module does', s('show netcdf', { said: 'show' }), s('show lic', { said: 'show' }), s('show site', { said: 'show' }), s('show viz', { said: 'show' }), s('show plugin', { said: 'show' }), s('show cuda', { said: 'show' })),

  // ---- collections ----------------------------------------------------------------------
  V('save, savelist, describe, restore', s('load zlib/1.3 gcc/12.3'), s('save mine'), s('save'), s('savelist'), s('-t savelist'), s('describe mine'), s('-t describe mine'), s('purge'), s('restore mine'), s('-t list'), s('purge'), s('restore'), s('-t list')),
  V('restore: a collection that does not exist', s('load zlib'), s('restore nope'), s('-t list')),
  V('describe: a collection that does not exist', s('describe nope')),
  V(
    'disable: a disabled collection is gone from savelist and restore',
    s('load rocm'),
    s('save gone'),
    s('disable gone', { differs: { id: 'L6', aspects: ['said'], strata: { said: /Disabling gone collection/ } } }),
    s('savelist'),
    s('restore gone'),
  ),

  // ---- the hierarchy: compiler → MPI → HDF5 ---------------------------------------------
  H('hierarchy: avail shows what the loaded compiler and MPI make available', s('-t avail'), s('load gcc/12.3'), s('-t avail'), s('load mpi/openmpi-4.1'), s('-t avail'), s('load hdf5'), s('avail'), s('-t list')),
  H('hierarchy: a module whose parents are not loaded cannot be loaded as requested', s('load hdf5'), s('load mpi'), s('load gcc/12.3 mpi hdf5'), s('-t list')),
  H('hierarchy: swapping the compiler swaps the MPI and HDF5 to their builds, and back', s('load gcc/12.3 mpi/openmpi-4.1 hdf5'), s('swap gcc gcc/11.4'), s('list'), s('swap gcc gcc/12.3'), s('-t list')),
  H('hierarchy: swapping the MPI swaps HDF5 to its build, and back', s('load gcc/12.3 mpi/openmpi-4.1 hdf5'), s('swap mpi mpi/mpich-4.1'), s('-t avail hdf5'), s('swap mpi/mpich-4.1 mpi/openmpi-4.1'), s('list')),
  H('hierarchy: a build missing under the new MPI goes inactive and comes back', s('load gcc/11.4 mpi/openmpi-4.1 hdf5/1.12'), s('swap mpi mpi/mpich-4.1'), s('list'), s('-t list'), s('swap mpi mpi/openmpi-4.1'), s('list')),
  H('hierarchy: a build missing under the new compiler goes inactive and comes back', s('load gcc/12.3 boost mpi/openmpi-4.1 hdf5'), s('swap gcc gcc/11.4'), s('list'), s('swap gcc gcc/12.3'), s('list')),
  H('hierarchy: an explicit version that the new compiler lacks goes inactive', s('load gcc/11.4 mpi/openmpi-4.1 hdf5/1.12'), s('swap gcc gcc/12.3'), s('list'), s('swap gcc gcc/11.4'), s('-t list')),
  H('hierarchy: unloading the compiler makes its children inactive; loading it brings them back', s('load gcc/12.3 mpi/mpich-4.1 hdf5'), s('unload gcc'), s('list'), s('load gcc/12.3'), s('list'), s('unload hdf5'), s('unload gcc'), s('list')),
  H('hierarchy: a compiler of the same family from another vendor', s('load gcc/12.3 mpi/openmpi-4.1 hdf5'), s('load intel'), s('list'), s('load gcc/11.4'), s('list')),
  H('hierarchy: requirements inside a level', s('load gcc/12.3 mpi/openmpi-4.1 h5tool'), s('-t list'), s('unload h5tool'), s('-t list')),
  H('hierarchy: a requirement reloaded under a new MPI, its dependant inactive', s('load gcc/12.3 mpi/openmpi-4.1 h5tool'), s('swap mpi mpi/mpich-4.1'), s('list'), s('swap mpi mpi/openmpi-4.1'), s('list'), s('unload h5tool'), s('-t list')),
  H('hierarchy: unloading a compiler and its MPI in one command', s('load gcc/12.3 mpi hdf5'), s('unload gcc mpi'), s('list'), s('load gcc/12.3'), s('list'), s('load mpi'), s('list'), s('load hdf5/1.14'), s('swap gcc gcc/11.4'), s('-t list')),
  H('hierarchy: unloading and loading an inactive module', s('load gcc/12.3 boost mpi/openmpi-4.1'), s('swap gcc gcc/11.4'), s('unload boost'), s('list'), s('swap gcc gcc/12.3'), s('-t list'), s('swap gcc gcc/11.4'), s('load boost'), s('purge'), s('list')),
  H('hierarchy: the same full name built under two MPIs', s('load gcc/11.4 mpi/openmpi-4.1 hdf5/1.14'), s('-t avail hdf5'), s('avail hdf5'), s('swap mpi mpi/mpich-4.1'), s('list'), s('swap mpi/mpich-4.1 mpi/openmpi-4.1'), s('-t list')),
  H('hierarchy: spider finds every build and says what to load first', s('spider hdf5'), s('spider hdf5/1.14'), s('spider hdf5/1.12'), s('spider mpi/openmpi-4.1'), s('spider boost'), s('-t spider mpi'), s('spider mpi')),
  H('hierarchy: save and restore a stack of the hierarchy', s('load gcc/12.3 mpi/mpich-4.1 hdf5/1.14'), s('save h'), s('purge'), s('restore h'), s('-t list'), s('-t describe h')),
];
