/**
 * `strata exec DIR|IMAGE -- CMD…`: runs a command inside a sandbox or an image with the stack's
 * environment, the way Charliecloud's ch-run does — a private mount namespace, the host's
 * /proc, /dev, /sys, /tmp and the user's home bound in where the root has those directories,
 * then the root changed to the stack's and the working directory kept when it exists there.
 *
 * Privileges: root uses a mount namespace only; any other user an unprivileged user namespace
 * (`unshare --map-root-user`), so no setuid helper is involved and the user stays who they are
 * to the files (their uid maps to root inside, and to themselves outside). Where the kernel
 * forbids user namespaces the command fails in one line saying so.
 *
 * Images are mounted read-only for the run and unmounted after, also when the command fails or
 * strata is interrupted: by the kernel as root (`mount -o ro,loop`, SquashFS or EROFS), with
 * squashfuse otherwise (SquashFS only; a non-root EROFS mount needs erofsfuse, not packaged).
 *
 * Only util-linux (`unshare`, `mount`, `umount`) and squashfuse are run, always with an argv,
 * never through a shell. The environment is the caller's with the lock's operations applied
 * (prepend, append, set), read from the target's /.strata/lock.json.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StrataError, COMPOSE_ERR } from './errors.js';
import { parseLock } from './lock.js';
import { imageFormat } from './image/index.js';
import { IMAGE_ERR } from './image/errors.js';
import type { EnvOp } from '../store/index.js';

/** Host directories bound into the root when it has a directory of the same name. */
const BINDS = ['/proc', '/dev', '/sys', '/tmp'];

export interface ExecOptions {
  /** The caller's environment (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** The caller's working directory (default process.cwd()). */
  cwd?: string;
}

/** The environment after the lock's operations, in order (Lmod's prepend/append/set). */
export function applyEnv(base: NodeJS.ProcessEnv, ops: readonly EnvOp[]): NodeJS.ProcessEnv {
  const env = { ...base };
  for (const o of ops) {
    const cur = env[o.var];
    if (o.op === 'set' || !cur) env[o.var] = o.value;
    else env[o.var] = o.op === 'prepend' ? `${o.value}:${cur}` : `${cur}:${o.value}`;
  }
  return env;
}

/** Runs `argv` inside `target`; resolves to the command's exit status (128 + signal when killed). */
export async function execIn(target: string, argv: string[], opts: ExecOptions = {}): Promise<number> {
  if (argv.length === 0) throw new StrataError(COMPOSE_ERR.TARGET_INVALID, 'no command to run', { hint: 'strata exec TARGET -- CMD [ARGS…]' });
  const st = fs.statSync(target, { throwIfNoEntry: false });
  if (!st) throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${target} does not exist`);
  const root = process.getuid?.() === 0;
  if (!root) checkUserNamespaces();
  let mounted: Mounted | undefined;
  let dir = path.resolve(target);
  if (!st.isDirectory()) {
    mounted = mountImage(dir, root);
    dir = mounted.dir;
  }
  const release = () => mounted?.release();
  const onSignal = (sig: NodeJS.Signals) => {
    release();
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const env = applyEnv(opts.env ?? process.env, lockEnv(dir, target));
    return await run(dir, argv, env, opts.cwd ?? process.cwd(), root);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    release();
  }
}

function lockEnv(dir: string, target: string): EnvOp[] {
  const file = path.join(dir, '.strata', 'lock.json');
  let text: string;
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    try {
      if (!fs.fstatSync(fd).isFile()) throw new Error('not a file');
      text = fs.readFileSync(fd, 'utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${target} has no /.strata/lock.json`, { hint: 'give a sandbox or image built by strata' });
  }
  return parseLock(text, `${target}: /.strata/lock.json`, IMAGE_ERR.CORRUPT).env;
}

function checkUserNamespaces(): void {
  const r = spawnSync('unshare', ['--user', '--map-root-user', '--mount', 'true'], { stdio: 'ignore' });
  if (r.error || r.status !== 0) {
    throw new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, 'this kernel does not let you create a user namespace, which strata exec needs without root', {
      hint: 'ask your admin for user.max_user_namespaces > 0, or run the image with Apptainer',
    });
  }
}

interface Mounted {
  dir: string;
  release(): void;
}

function mountImage(image: string, root: boolean): Mounted {
  const format = imageFormatSync(image);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-exec-'));
  const fail = (what: string, r: ReturnType<typeof spawnSync>) => {
    fs.rmdirSync(dir);
    const why = r.error ? (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not installed' : r.error.message : String(r.stderr ?? '').trim().split('\n')[0];
    return new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, `cannot mount ${image} (${what}: ${why})`, {
      hint: root ? 'the kernel needs SquashFS/EROFS support and a free loop device' : 'install squashfuse, or run as root',
    });
  };
  let unmount: string[];
  if (root) {
    const r = spawnSync('mount', ['-t', format, '-o', 'ro,loop,nodev,nosuid', image, dir], { encoding: 'utf8' });
    if (r.status !== 0) throw fail('mount', r);
    unmount = ['umount', dir];
  } else {
    if (format !== 'squashfs') {
      fs.rmdirSync(dir);
      throw new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, `mounting the EROFS image ${image} needs root`, { hint: 'run as root, or build a SquashFS image for unprivileged use' });
    }
    const r = spawnSync('squashfuse', [image, dir], { encoding: 'utf8' });
    if (r.status !== 0) throw fail('squashfuse', r);
    unmount = spawnSync('fusermount3', ['--version'], { stdio: 'ignore' }).status === 0 ? ['fusermount3', '-u', dir] : ['fusermount', '-u', dir];
  }
  let done = false;
  return {
    dir,
    release() {
      if (done) return;
      done = true;
      spawnSync(unmount[0]!, unmount.slice(1), { stdio: 'ignore' });
      try {
        fs.rmdirSync(dir);
      } catch {
        /* gone, or still busy (left for the admin: it is an empty mount point) */
      }
    },
  };
}

function imageFormatSync(image: string): 'squashfs' | 'erofs' {
  const head = Buffer.alloc(1028);
  const fd = fs.openSync(image, 'r');
  try {
    fs.readSync(fd, head, 0, head.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (head.readUInt32LE(0) === 0x73717368) return 'squashfs';
  if (head.readUInt32LE(1024) === 0xe0f5e1e2) return 'erofs';
  void imageFormat; // the async sniffer says the same for callers that can wait
  throw new StrataError(IMAGE_ERR.CORRUPT, `${image} is neither a directory nor a SquashFS or EROFS image`);
}

/**
 * The namespace: `unshare` (with --map-root-user when not root) runs this Node with the inner
 * step (cli/main.ts `__exec-inner`), which binds the host directories and then asks `unshare
 * --root --wd` to start the command in the stack's root.
 */
function run(dir: string, argv: string[], env: NodeJS.ProcessEnv, cwd: string, root: boolean): Promise<number> {
  const inner = [process.execPath, new URL('../cli/main.js', import.meta.url).pathname, '__exec-inner', dir, cwd, '--', ...argv];
  const ns = root ? ['--mount', '--propagation', 'private', '--fork'] : ['--user', '--map-root-user', '--mount', '--propagation', 'private', '--fork'];
  return new Promise((resolve) => {
    const child = spawn('unshare', [...ns, '--', ...inner], { env, stdio: 'inherit' });
    child.on('error', () => resolve(127));
    child.on('close', (code, signal) => resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0)));
  });
}

/**
 * Inside the namespace: binds /proc, /dev, /sys, /tmp and $HOME into `dir` where it has those
 * directories (read-only images have them or go without), then runs the command rooted there,
 * in `cwd` when the root has it, else in /. Returns the command's exit status.
 */
export function execInner(dir: string, cwd: string, argv: string[]): number {
  const home = process.env.HOME;
  for (const host of [...BINDS, ...(home && home !== '/' ? [home] : [])]) {
    const at = path.join(dir, host);
    const st = fs.lstatSync(at, { throwIfNoEntry: false });
    if (!st?.isDirectory() || !fs.existsSync(host)) continue;
    spawnSync('mount', ['--rbind', host, at], { stdio: 'ignore' });
  }
  const inside = fs.lstatSync(path.join(dir, cwd), { throwIfNoEntry: false })?.isDirectory() ? cwd : '/';
  const r = spawnSync('unshare', [`--root=${dir}`, `--wd=${inside}`, '--', ...argv], { stdio: 'inherit' });
  if (r.error) return 127;
  return r.status ?? 128 + (r.signal ? os.constants.signals[r.signal] : 0);
}
