/**
 * The benchmark's data: a real HPC stack built from Debian's packages, cached under
 * .bench-data/ (gitignored) and reused while its stamp matches DATA_VERSION.
 *
 * Layout of the cache (all paths relative to the data root):
 *
 *   layers/base/    Debian 12 minbase root made by `debootstrap --variant=minbase bookworm`
 *   layers/mpi/     overlayfs upperdir left by `apt-get install openmpi-bin libopenmpi-dev`
 *                   on top of base (char 0/0 whiteouts, trusted.overlay.* xattrs kept as
 *                   the kernel left them)
 *   layers/app/     upperdir of `apt-get install python3-mpi4py` on top of base+mpi
 *   layers/app2/    app with one file changed and one file added (still an upperdir)
 *   layers/lic/     a plain directory: a licensed application (see buildLic)
 *   tars/NAME.tar   each layer as a GNU tar, pax format, `--xattrs --xattrs-include='*'
 *                   --acls --numeric-owner`; overlay whiteouts converted to OCI entries
 *                   (char 0/0 → `.wh.NAME`, opaque dir → `.wh..wh..opq`, trusted.overlay.*
 *                   dropped); member names are `./…`
 *   oci/            OCI image layout written by umoci: tag `stack` = base, mpi, app, lic
 *                   (each tar added verbatim with `umoci raw add-layer`, so gzip-compressed)
 *   stamp.json      written last: {version, mirror, built, layers: {NAME: {files, bytes}}}
 *
 * The apt mirror is read from this machine's /etc/apt/sources.list* at run time; no host
 * name is written into the repository. Building needs root (debootstrap, mount, chroot).
 */
import { createCipheriv, randomUUID } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rm, writeFile, appendFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { log, run, BenchError } from './proc.js';

export const DATA_VERSION = 2;

export type LayerName = 'base' | 'mpi' | 'app' | 'app2' | 'lic';

export interface LayerData {
  name: LayerName;
  /** The layer as a directory: a rootfs (base), an overlay upperdir, or a plain tree (lic). */
  dir: string;
  /** True when `dir` is an overlayfs upperdir (import it with `--overlay`). */
  overlay: boolean;
  /** The layer as a GNU pax tar with OCI whiteouts. */
  tar: string;
}

export interface BenchData {
  root: string;
  mirror: string;
  layers: Record<LayerName, LayerData>;
  /** Bottom to top: base, mpi, app, lic. */
  stack: LayerName[];
  /** The same stack with app swapped for app2. */
  stack2: LayerName[];
  /** OCI layout directory and the tag holding `stack`. */
  oci: string;
  ociTag: string;
  stamp: DataStamp;
}

export interface DataStamp {
  version: number;
  mirror: string;
  built: string;
  layers: Record<string, { files: number; bytes: number; whiteouts: number; opaque: number }>;
}

export const STACK: LayerName[] = ['base', 'mpi', 'app', 'lic'];
export const STACK2: LayerName[] = ['base', 'mpi', 'app2', 'lic'];
const OVERLAY_LAYERS: ReadonlySet<LayerName> = new Set(['mpi', 'app', 'app2']);

const MPI_PACKAGES = ['openmpi-bin', 'libopenmpi-dev'];
const APP_PACKAGES = ['python3-mpi4py'];
/**
 * Run in the chroot after each install, as container recipes do: deleting the logs that
 * lower layers wrote leaves real overlay whiteouts (char 0/0) in the upperdir.
 */
const LOG_CLEANUP = 'rm -f /var/log/*.log /var/log/apt/*';
/** Fixed mtime of the generated lic tree (2024-01-01T00:00:00Z), so its tar is stable. */
const LIC_MTIME = '202401010000.00';
const LIC_BINARY_BYTES = 20 * 1024 * 1024;
/** gid of the group named in the license ACLs (Debian's "staff") and a second site group. */
const LIC_GROUP = 50;
const LIC_GROUP2 = 1234;

/**
 * The first `deb` source for suite bookworm, component main, in this machine's apt
 * configuration (one-line .list files and deb822 .sources files).
 */
export async function debianMirror(): Promise<string> {
  const files: string[] = [];
  if (existsSync('/etc/apt/sources.list')) files.push('/etc/apt/sources.list');
  if (existsSync('/etc/apt/sources.list.d')) {
    for (const f of (await readdir('/etc/apt/sources.list.d')).sort()) {
      if (f.endsWith('.list') || f.endsWith('.sources')) files.push(join('/etc/apt/sources.list.d', f));
    }
  }
  for (const f of files) {
    const text = await readFile(f, 'utf8');
    if (f.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const fields = new Map<string, string>();
        for (const line of stanza.split('\n')) {
          const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
          if (m && !line.startsWith('#')) fields.set(m[1]!.toLowerCase(), m[2]!.trim());
        }
        const types = (fields.get('types') ?? '').split(/\s+/);
        const suites = (fields.get('suites') ?? '').split(/\s+/);
        const comps = (fields.get('components') ?? '').split(/\s+/);
        const uri = (fields.get('uris') ?? '').split(/\s+/)[0];
        if (fields.get('enabled') === 'no') continue;
        if (uri && types.includes('deb') && suites.includes('bookworm') && comps.includes('main')) return uri;
      }
    } else {
      for (const raw of text.split('\n')) {
        const line = raw.replace(/#.*/, '').trim();
        const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line);
        if (m && m[2] === 'bookworm' && m[3]!.split(/\s+/).includes('main')) return m[1]!;
      }
    }
  }
  throw new BenchError('no bookworm main source in /etc/apt/sources.list*; the benchmark needs a Debian mirror');
}

/** Loads the cached data, building whatever is missing. Needs root for a build. */
export async function ensureData(root: string): Promise<BenchData> {
  const stampPath = join(root, 'stamp.json');
  if (existsSync(stampPath)) {
    const stamp = JSON.parse(await readFile(stampPath, 'utf8')) as DataStamp;
    if (stamp.version === DATA_VERSION) return describe(root, stamp);
    log(`data version ${stamp.version} != ${DATA_VERSION}: rebuilding ${root}`);
    await rm(stampPath);
    await rm(join(root, 'steps'), { recursive: true, force: true });
  }
  if (process.getuid?.() !== 0) throw new BenchError('building the benchmark data needs root (debootstrap, mount, chroot)');
  const mirror = await debianMirror();
  await mkdir(join(root, 'layers'), { recursive: true });
  await mkdir(join(root, 'tars'), { recursive: true });
  await mkdir(join(root, 'steps'), { recursive: true });
  await unmountUnder(join(root, 'work'));
  await rm(join(root, 'work'), { recursive: true, force: true });

  const t0 = Date.now();
  await step(root, 'base', () => buildBase(root, mirror));
  await step(root, 'mpi', () => buildOverlay(root, 'mpi', ['base'], MPI_PACKAGES));
  await step(root, 'app', () => buildOverlay(root, 'app', ['mpi', 'base'], APP_PACKAGES));
  await step(root, 'app2', () => buildApp2(root));
  await step(root, 'lic', () => buildLic(root));
  for (const name of ['base', 'mpi', 'app', 'app2', 'lic'] as LayerName[]) {
    await step(root, `tar-${name}`, () => buildTar(root, name));
  }
  await step(root, 'oci', () => buildOci(root));

  const stamp: DataStamp = { version: DATA_VERSION, mirror, built: new Date().toISOString(), layers: {} };
  for (const name of ['base', 'mpi', 'app', 'app2', 'lic'] as LayerName[]) {
    stamp.layers[name] = await countTree(join(root, 'layers', name), OVERLAY_LAYERS.has(name));
  }
  await writeFile(stampPath, JSON.stringify(stamp, null, 2) + '\n');
  log(`data built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return describe(root, stamp);
}

function describe(root: string, stamp: DataStamp): BenchData {
  const layers = {} as Record<LayerName, LayerData>;
  for (const name of ['base', 'mpi', 'app', 'app2', 'lic'] as LayerName[]) {
    layers[name] = {
      name,
      dir: join(root, 'layers', name),
      overlay: OVERLAY_LAYERS.has(name),
      tar: join(root, 'tars', `${name}.tar`),
    };
  }
  return { root, mirror: stamp.mirror, layers, stack: STACK, stack2: STACK2, oci: join(root, 'oci'), ociTag: 'stack', stamp };
}

async function step(root: string, name: string, fn: () => Promise<void>): Promise<void> {
  const done = join(root, 'steps', `${name}.done`);
  if (existsSync(done)) return;
  const t0 = Date.now();
  log(`building ${name} …`);
  await fn();
  await writeFile(done, new Date().toISOString() + '\n');
  log(`built ${name} in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

async function buildBase(root: string, mirror: string): Promise<void> {
  const dir = join(root, 'layers', 'base');
  await rm(dir, { recursive: true, force: true });
  await run('debootstrap', ['--variant=minbase', 'bookworm', dir, mirror], { inherit: true });
  // debootstrap leaves the Packages lists and pkgcache behind: they are not part of an OS
  // layer anyone ships, and apt in the chroots fetches fresh ones into the upperdir.
  await cleanApt(dir);
}

/** Removes apt's downloaded lists, package caches and .debs from a root or an upperdir. */
async function cleanApt(dir: string): Promise<void> {
  const lists = join(dir, 'var/lib/apt/lists');
  for (const f of await readdirSafe(lists)) {
    if (f !== 'lock' && f !== 'partial') await rm(join(lists, f), { recursive: true, force: true });
  }
  for (const f of await readdirSafe(join(lists, 'partial'))) await rm(join(lists, 'partial', f), { recursive: true, force: true });
  const cache = join(dir, 'var/cache/apt');
  for (const f of await readdirSafe(cache)) {
    if (f.endsWith('.bin')) await rm(join(cache, f), { force: true });
  }
  const archives = join(cache, 'archives');
  for (const f of await readdirSafe(archives)) {
    if (f.endsWith('.deb')) await rm(join(archives, f), { force: true });
  }
  for (const f of await readdirSafe(join(archives, 'partial'))) await rm(join(archives, 'partial', f), { recursive: true, force: true });
}

async function readdirSafe(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/**
 * Installs packages in a chroot on an overlay of the given lower layers (top first) and
 * keeps the upperdir as the layer. Every mount is undone, even when apt fails.
 */
async function buildOverlay(root: string, name: LayerName, lowers: LayerName[], packages: string[]): Promise<void> {
  const upper = join(root, 'layers', name);
  const work = join(root, 'work', name);
  const wdir = join(work, 'w');
  const merged = join(work, 'm');
  await rm(upper, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
  await mkdir(upper, { recursive: true });
  await mkdir(wdir, { recursive: true });
  await mkdir(merged, { recursive: true });
  const mounts: string[] = [];
  const mount = async (args: string[], target: string) => {
    await run('mount', [...args, target]);
    mounts.push(target);
  };
  const hadResolv = existsSync(join(root, 'layers', 'base', 'etc/resolv.conf'));
  try {
    const lowerdir = lowers.map((l) => join(root, 'layers', l)).join(':');
    await mount(['-t', 'overlay', 'overlay', '-o', `lowerdir=${lowerdir},upperdir=${upper},workdir=${wdir}`], merged);
    await mount(['-t', 'proc', 'proc'], join(merged, 'proc'));
    await mount(['--bind', '/dev'], join(merged, 'dev'));
    // DNS inside the chroot: bind the host's resolv.conf over the base's (no copy-up), or
    // write one and remove it from the upperdir afterwards.
    if (hadResolv && existsSync('/etc/resolv.conf')) {
      await mount(['--bind', '/etc/resolv.conf'], join(merged, 'etc/resolv.conf'));
    } else if (existsSync('/etc/resolv.conf')) {
      await writeFile(join(merged, 'etc/resolv.conf'), await readFile('/etc/resolv.conf'));
    }
    const env = {
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      DEBIAN_FRONTEND: 'noninteractive',
      LANG: 'C.UTF-8',
      HOME: '/root',
    };
    const apt = ['-o', 'Dpkg::Use-Pty=0', '-o', 'APT::Sandbox::User=root', '-q'];
    await run('chroot', [merged, 'apt-get', ...apt, 'update'], { env, inherit: true });
    await run('chroot', [merged, 'apt-get', ...apt, '-y', '--no-install-recommends', 'install', ...packages], {
      env,
      inherit: true,
    });
    await run('chroot', [merged, 'apt-get', ...apt, 'clean'], { env, inherit: true });
    await run('chroot', [merged, '/bin/sh', '-c', LOG_CLEANUP], { env, inherit: true });
  } finally {
    for (const m of mounts.reverse()) {
      const r = await run('umount', [m], { allowFail: true });
      if (r.code !== 0) await run('umount', ['-l', m], { allowFail: true });
    }
  }
  if (!hadResolv) await rm(join(upper, 'etc/resolv.conf'), { force: true });
  await cleanApt(upper);
  await rm(work, { recursive: true, force: true });
}

/** Unmounts (deepest first) anything a crashed earlier build left mounted under dir. */
async function unmountUnder(dir: string): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const points = info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p && (p === dir || p.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await run('umount', ['-l', p], { allowFail: true });
}

/** app2 = app + one changed file + one added file, in the same upperdir form. */
async function buildApp2(root: string): Promise<void> {
  const app = join(root, 'layers', 'app');
  const app2 = join(root, 'layers', 'app2');
  await rm(app2, { recursive: true, force: true });
  await run('cp', ['-a', app, app2]);
  const pkg = 'usr/lib/python3/dist-packages/mpi4py';
  const changed = join(app2, pkg, '__init__.py');
  if (!existsSync(changed)) throw new BenchError(`app2: ${pkg}/__init__.py not found in the app layer`);
  await appendFile(changed, '\n# site patch 2: rebuilt against the site MPI\n');
  await writeFile(join(app2, pkg, 'site_patch.py'), 'PATCH_LEVEL = 2\n', { mode: 0o644 });
}

/**
 * lic: a licensed application under opt/licapp:
 *   bin/licapp        20 MiB of AES-CTR keystream (deterministic), 0755, a user xattr and
 *                     the file capability cap_net_bind_service=ep
 *   etc/license.lic   0640 root:50 with group ACLs (g:50:r, g:1234:r)
 *   share/            default ACLs (d:g:50:rx, d:g:1234:rx) and a file created under them
 */
async function buildLic(root: string): Promise<void> {
  const dir = join(root, 'layers', 'lic');
  await rm(dir, { recursive: true, force: true });
  const app = join(dir, 'opt/licapp');
  for (const d of ['bin', 'etc', 'share']) await mkdir(join(app, d), { recursive: true, mode: 0o755 });
  const bin = join(app, 'bin/licapp');
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 0x5a), Buffer.alloc(16, 0));
  const zero = Buffer.alloc(1 << 20);
  await pipeline(
    Readable.from(
      (function* () {
        for (let i = 0; i < LIC_BINARY_BYTES / zero.length; i++) yield cipher.update(zero);
      })(),
    ),
    createWriteStream(bin, { mode: 0o755 }),
  );
  const lic = join(app, 'etc/license.lic');
  await writeFile(lic, 'LICENSE SERVER=licsrv 27000\nFEATURE licapp vendor 1.0 permanent uncounted HOSTID=ANY\n');
  await run('chown', ['-R', '0:0', dir]);
  await run('chmod', ['0755', dir, join(dir, 'opt'), app, join(app, 'bin'), join(app, 'etc'), join(app, 'share'), bin]);
  await run('chown', [`0:${LIC_GROUP}`, lic]);
  await run('chmod', ['0640', lic]);
  await run('setfacl', ['-m', `g:${LIC_GROUP}:r,g:${LIC_GROUP2}:r,m::r`, lic]);
  await run('setfacl', ['-d', '-m', `u::rwx,g::r-x,g:${LIC_GROUP}:r-x,g:${LIC_GROUP2}:r-x,m::r-x,o::---`, join(app, 'share')]);
  await writeFile(join(app, 'share/README'), 'licapp documentation: see the site wiki\n');
  await run('setfattr', ['-n', 'user.license.vendor', '-v', 'ACME site 1234', bin]);
  await run('setcap', ['cap_net_bind_service=+ep', bin]);
  await run('find', [dir, '-exec', 'touch', '-h', '-t', LIC_MTIME, '{}', '+']);
}

/** tars/NAME.tar from the layer, converting overlay whiteouts on a copy. */
async function buildTar(root: string, name: LayerName): Promise<void> {
  const tar = join(root, 'tars', `${name}.tar`);
  let src = join(root, 'layers', name);
  const conv = join(root, 'work', `conv-${name}`);
  if (OVERLAY_LAYERS.has(name)) {
    await rm(conv, { recursive: true, force: true });
    await mkdir(join(root, 'work'), { recursive: true });
    await run('cp', ['-a', src, conv]);
    await overlayToOci(conv);
    src = conv;
  }
  const tmp = `${tar}.${randomUUID()}.tmp`;
  await run('tar', [
    '--xattrs', "--xattrs-include=*", '--acls', '--format=pax', '--numeric-owner', '--sort=name',
    '-C', src, '-cf', tmp, '.',
  ]);
  await run('mv', [tmp, tar]);
  await rm(conv, { recursive: true, force: true });
}

/**
 * Rewrites an overlayfs upperdir in place into OCI whiteout form:
 *   char device 0/0 NAME             → empty regular file .wh.NAME (0644, same owner, mtime)
 *   dir with trusted.overlay.opaque=y → that dir plus an empty file .wh..wh..opq in it
 *   every trusted.overlay.* xattr     → removed
 * Run it on a copy: the upperdir itself stays as the kernel left it.
 */
export async function overlayToOci(dir: string): Promise<{ whiteouts: number; opaque: number }> {
  const xattrs = await dumpXattrs(dir, '^trusted\\.overlay\\.');
  let whiteouts = 0;
  let opaque = 0;
  const walk = async (rel: string): Promise<void> => {
    for (const ent of await readdir(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${ent.name}` : ent.name;
      const abs = join(dir, p);
      if (ent.isCharacterDevice()) {
        const st = await lstat(abs);
        if (st.rdev !== 0) continue;
        await unlink(abs);
        const wh = join(dir, rel, `.wh.${ent.name}`);
        await writeFile(wh, '', { mode: 0o644 });
        await run('touch', ['-h', '-d', `@${Math.floor(st.mtimeMs / 1000)}`, wh]);
        whiteouts++;
      } else if (ent.isDirectory()) {
        await walk(p);
      }
    }
  };
  await walk('');
  for (const [p, attrs] of xattrs) {
    const abs = p === '.' ? dir : join(dir, p);
    if (attrs.get('trusted.overlay.opaque') === '0x79') {
      const st = await lstat(abs);
      if (st.isDirectory()) {
        const marker = join(abs, '.wh..wh..opq');
        await writeFile(marker, '', { mode: 0o644 });
        await run('touch', ['-h', '-d', `@${Math.floor(st.mtimeMs / 1000)}`, marker, abs]);
        opaque++;
      }
    }
    for (const name of attrs.keys()) {
      if (existsSync(abs)) await run('setfattr', ['-h', '-x', name, abs]);
    }
  }
  return { whiteouts, opaque };
}

/**
 * `getfattr -R -P -h -d -e hex -m PATTERN .` inside dir, parsed to path → (name → hex value).
 * Paths are relative ('.' for dir itself); getfattr's octal escapes are kept as printed.
 */
export async function dumpXattrs(dir: string, pattern = '-'): Promise<Map<string, Map<string, string>>> {
  const r = await run('getfattr', ['-R', '-P', '-h', '-d', '-e', 'hex', '-m', pattern, '.'], { cwd: dir, allowFail: true });
  // A filesystem without xattr support (a SquashFS image written without an xattr table)
  // answers ENOTSUP for every path: that is "no xattrs", not a failure.
  const errors = r.stderr.split('\n').filter((l) => l.trim() && !/: Operation not supported$/.test(l));
  if (r.code !== 0 && !r.stdout && errors.length) throw new BenchError(`getfattr failed in ${dir}: ${errors.slice(0, 3).join('; ')}`);
  const out = new Map<string, Map<string, string>>();
  let cur: Map<string, string> | undefined;
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      const p = line.slice(8);
      cur = new Map();
      out.set(p === '.' ? '.' : p.replace(/^\.\//, ''), cur);
    } else if (cur && line) {
      const eq = line.indexOf('=');
      if (eq > 0) cur.set(line.slice(0, eq), line.slice(eq + 1));
      else cur.set(line, '');
    }
  }
  return out;
}

async function buildOci(root: string): Promise<void> {
  const oci = join(root, 'oci');
  await rm(oci, { recursive: true, force: true });
  await run('umoci', ['init', '--layout', oci]);
  await run('umoci', ['new', '--image', `${oci}:stack`]);
  for (const name of STACK) {
    await run('umoci', ['raw', 'add-layer', '--image', `${oci}:stack`, '--history.created_by', `strata bench layer ${name}`, join(root, 'tars', `${name}.tar`)]);
  }
}

/** Files, bytes and overlay markers of a layer directory (for the stamp and the report). */
async function countTree(dir: string, overlay: boolean): Promise<{ files: number; bytes: number; whiteouts: number; opaque: number }> {
  const r = await run('find', [dir, '-printf', '%y %s %d\\n']);
  let files = 0;
  let bytes = 0;
  let whiteouts = 0;
  for (const line of r.stdout.split('\n')) {
    if (!line) continue;
    const [type, size] = line.split(' ');
    files++;
    if (type === 'f') bytes += Number(size);
    if (type === 'c' && overlay) whiteouts++;
  }
  const x = await dumpXattrs(dir, '^trusted\\.overlay\\.opaque$');
  let opaque = 0;
  for (const attrs of x.values()) if (attrs.get('trusted.overlay.opaque') === '0x79') opaque++;
  return { files, bytes, whiteouts, opaque };
}

/** Default data root: <package root>/.bench-data, or $BENCH_DATA. */
export function defaultDataRoot(packageRoot: string): string {
  return process.env['BENCH_DATA'] ?? join(packageRoot, '.bench-data');
}
