/**
 * `strata exec TARGET -- CMD…`: runs a command inside a sandbox directory or an image, with
 * the stack's environment, the way Charliecloud's ch-run does: in a mount namespace of its
 * own, unprivileged through a user namespace when the caller is not root; the host's /dev,
 * /proc, /sys, /tmp, $HOME and working directory bound in; the root read-only. An image is
 * mounted for the run and unmounted after, also when the command fails or strata is
 * interrupted. The process layout and the helper are in run/plan.ts and run/inside.ts.
 *
 * Contract: resolves to the command's exit status (128 + N when signal N ended it, or when
 * strata was interrupted by N before the command started). Throws a StrataError when no run
 * is possible (nothing mounted is left behind): ERR_NOT_FOUND, ERR_TARGET_INVALID,
 * ERR_INCOMPLETE, ERR_EXEC_UNAVAILABLE, ERR_EXEC_SETUP, ERR_COMMAND_NOT_FOUND (a shell's
 * 127), ERR_COMMAND_NOT_EXECUTABLE (126), or the image's ERR_IMAGE_CORRUPT for a lock that
 * is not one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { printable } from '../native/errors.js';
import { COMPOSE_ERR, StrataError } from './errors.js';
import { IMAGE_ERR } from './image/errors.js';
import { parseLock } from './lock.js';
import { imageFormat, mountImage, type ImageFormat, type MountedImage } from './run/mount-image.js';
import { applyEnv, defaultBinds, exitStatus, userNamespaceHint, userNamespacesOff, type HelperPlan, type HelperReply } from './run/plan.js';
import { resolveInRoot } from './run/root-path.js';
import { findTool, firstLine } from './run/tools.js';
import { isPrivateName } from './tree/index.js';

export interface ExecOptions {
  /** The environment the stack's operations apply to (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** The working directory to bind and enter (default: this process's). */
  cwd?: string;
  /** Called with each warning before the command starts. */
  onWarning?(message: string): void;
}

export type ExecTargetKind = 'sandbox' | ImageFormat;

/** Signals strata passes on to the command. */
const RELAYED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR2'];
/** Signals a terminal sends to its whole foreground process group (the command gets them itself). */
const FROM_TERMINAL = new Set<NodeJS.Signals>(['SIGINT', 'SIGQUIT']);

export async function execIn(target: string, argv: readonly string[], opts: ExecOptions = {}): Promise<number> {
  if (argv.length === 0 || argv[0] === '') throw new StrataError(COMPOSE_ERR.NOT_FOUND, 'no command given', { hint: 'strata exec TARGET -- COMMAND [ARG…]' });
  const kind = await targetKind(target);
  const asRoot = process.geteuid?.() === 0;
  const tools = { unshare: needTool('unshare'), nsenter: needTool('nsenter'), mount: needTool('mount') };
  if (!asRoot) {
    const off = userNamespacesOff(readSysctl);
    if (off) {
      throw new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, `cannot run in ${printable(target)} without root: this host gives no user namespaces to users (${off})`, {
        hint: userNamespaceHint(readSysctl),
      });
    }
  }
  const baseEnv = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();

  const stage = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-exec-'));
  const signals = new SignalRelay();
  let image: MountedImage | undefined;
  let helper: Helper | undefined;
  try {
    let setup: { reply: Extract<HelperReply, { ok: true }>; env: Record<string, string> };
    try {
      setup = await prepare();
    } catch (e) {
      // A tool that died of the terminal's ^C fails its step: that is the interruption, not an error.
      if (signals.received) return signals.status();
      throw e;
    }
    if (signals.received) return signals.status();
    const { reply, env } = setup;
    const args = ['--target', String(helper!.pid), '--mount'];
    if (!asRoot) args.push('--user', '--preserve-credentials');
    args.push('--', tools.unshare);
    if (!asRoot) args.push(`--map-user=${process.geteuid!()}`, `--map-group=${process.getegid!()}`);
    args.push(`--root=${reply.root}`, `--wd=${reply.wd}`, '--', ...argv);
    const command = spawn(tools.nsenter, args, { stdio: 'inherit', env });
    signals.relayTo(command, helper!);
    return await new Promise<number>((resolve, reject) => {
      command.on('error', (e) => reject(new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, `cannot start nsenter: ${e.message}`)));
      command.on('exit', (code, signal) => resolve(exitStatus(code, signal ? os.constants.signals[signal] : undefined)));
    });
  } finally {
    // Cleanup runs to its end whatever arrives meanwhile: signals stay caught until it is done.
    // An interrupted run ends all it started, so that the image is free to go.
    if (signals.received && helper?.mountNs) await endLeftovers(helper.mountNs, helper.pid);
    await helper?.stop();
    const warning = await image?.unmount();
    if (warning) opts.onWarning?.(warning);
    for (const d of ['ns', 'mnt', '']) await fsp.rmdir(path.join(stage, d)).catch(() => undefined);
    signals.release();
  }

  /** Mounts the image, reads the lock, starts the helper and has it build the root. */
  async function prepare() {
    let lower: string;
    if (kind === 'sandbox') {
      lower = await fsp.realpath(target);
    } else {
      const mnt = path.join(stage, 'mnt');
      await fsp.mkdir(mnt, { mode: 0o700 });
      image = await mountImage(path.resolve(target), kind, mnt, asRoot);
      lower = mnt;
    }
    const lock = await readLock(target, lower);
    if (!lock) opts.onWarning?.(`${printable(target)} has no /.strata/lock.json (it was not built by strata): the command gets your environment unchanged`);
    const env = applyEnv(baseEnv, lock?.env ?? []);
    const ns = path.join(stage, 'ns');
    await fsp.mkdir(ns, { mode: 0o700 });
    const plan: HelperPlan = {
      stage: ns,
      lower,
      userns: !asRoot,
      binds: defaultBinds({ home: realDir(baseEnv.HOME), cwd, kind: hostKind }),
      wd: cwd,
      command: argv[0]!,
      path: env.PATH,
      mount: tools.mount,
    };

    helper = startHelper(tools.unshare, asRoot);
    const reply = await helper.ask(plan);
    if (!reply.ok) throw new StrataError(reply.code, reply.message, reply.hint ? { hint: reply.hint } : {});
    for (const w of reply.warnings) opts.onWarning?.(w);
    return { reply, env };
  }
}

/** What TARGET is: a sandbox directory, or an image by its magic. */
export async function targetKind(target: string): Promise<ExecTargetKind> {
  let st: fs.Stats;
  try {
    st = await fsp.stat(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new StrataError(COMPOSE_ERR.NOT_FOUND, `${printable(target)} does not exist`);
    throw e;
  }
  if (st.isDirectory()) {
    const names = await fsp.readdir(target);
    if (names.some(isPrivateName)) {
      throw new StrataError(COMPOSE_ERR.INCOMPLETE, `${printable(target)} is an incomplete sandbox: a build into it was interrupted or is still running`, {
        hint: 'build it again with --force',
      });
    }
    return 'sandbox';
  }
  const format = st.isFile() ? await imageFormat(target) : undefined;
  if (!format) {
    throw new StrataError(COMPOSE_ERR.TARGET_INVALID, `${printable(target)} is neither a sandbox directory nor a SquashFS or EROFS image`, {
      hint: 'give a directory from `strata compose sandbox` or an image from `strata compose squash`',
    });
  }
  return format;
}

/** A lock far larger than any stack's is not read whole: the tree is not to be trusted. */
const MAX_LOCK_BYTES = 16 << 20;

async function readLock(target: string, tree: string) {
  const at = resolveInRoot(tree, '.strata/lock.json');
  if (!at || !at.stat.isFile()) return undefined;
  const where = `${printable(target)}: /.strata/lock.json`;
  const fh = await fsp.open(at.host, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const size = (await fh.stat()).size;
    if (size > MAX_LOCK_BYTES) throw new StrataError(IMAGE_ERR.CORRUPT, `${where} is ${size} bytes, too large for a lock`);
    return parseLock(await fh.readFile('utf8'), where, IMAGE_ERR.CORRUPT);
  } finally {
    await fh.close();
  }
}

function needTool(name: string): string {
  const p = findTool(name);
  if (!p) {
    throw new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, `strata exec needs ${name} (util-linux), which is not installed`, { hint: 'install util-linux' });
  }
  return p;
}

function readSysctl(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function hostKind(p: string): 'dir' | 'file' | undefined {
  try {
    const st = fs.statSync(p);
    return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : undefined;
  } catch {
    return undefined;
  }
}

function realDir(p: string | undefined): string | undefined {
  if (!p || !path.isAbsolute(p)) return undefined;
  try {
    return fs.realpathSync(p);
  } catch {
    return undefined;
  }
}

interface Helper {
  pid: number;
  /** The run's mount namespace (`mnt:[inode]`), known once the helper has answered. */
  mountNs?: string;
  /** Sends the plan, resolves to the reply; rejects when the helper could not start. */
  ask(plan: HelperPlan): Promise<HelperReply>;
  /** Lets the helper go and waits until it has. */
  stop(): Promise<void>;
}

/**
 * Starts the helper (run/inside.ts) in fresh namespaces. Its stderr is kept (bounded) for the
 * one-line error when unshare itself fails (a user namespace refused).
 */
function startHelper(unshare: string, asRoot: boolean): Helper {
  const script = fileURLToPath(new URL('./run/inside.js', import.meta.url));
  const ns = asRoot ? ['--mount'] : ['--user', '--map-root-user', '--mount'];
  const child: ChildProcess = spawn(unshare, [...ns, '--propagation', 'private', '--', process.execPath, script], {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    env: {},
  });
  const control = child.stdio[3] as Readable & Writable;
  const stderr: Buffer[] = [];
  child.stdio[2]!.on('data', (d: Buffer) => stderr.length < 64 && stderr.push(d));
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.on('close', () => resolve());
    child.on('error', () => resolve());
  });
  control.on('error', () => undefined);
  const helper: Helper = {
    pid: child.pid ?? -1,
    ask(plan) {
      return new Promise<HelperReply>((resolve, reject) => {
        let buf = '';
        control.setEncoding('utf8');
        control.on('data', (chunk: string) => {
          buf += chunk;
          const nl = buf.indexOf('\n');
          if (nl < 0) return;
          helper.mountNs = mountNamespaceOf(helper.pid);
          resolve(JSON.parse(buf.slice(0, nl)) as HelperReply);
        });
        child.on('error', (e) => reject(new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, `cannot start unshare: ${e.message}`)));
        void exited.then(() => {
          const why = firstLine(Buffer.concat(stderr).toString('utf8')).replace(/^unshare: /, '') || `the helper ended (${child.signalCode ?? `exit ${child.exitCode}`})`;
          reject(
            asRoot
              ? new StrataError(COMPOSE_ERR.EXEC_SETUP, `cannot make a mount namespace: ${why}`)
              : new StrataError(COMPOSE_ERR.EXEC_UNAVAILABLE, `cannot make a user namespace: ${why}`, { hint: userNamespaceHint(readSysctl) }),
          );
        });
        control.write(`${JSON.stringify(plan)}\n`);
      });
    },
    async stop() {
      control.end();
      await exited;
    },
  };
  return helper;
}

function mountNamespaceOf(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

/**
 * SIGKILLs every process left in the mount namespace `ns` but `except` (the command's children,
 * daemons it started) and waits until they have left it, so that the image they held can be
 * unmounted at once. A process that exits drops its namespaces before it becomes a zombie.
 */
async function endLeftovers(ns: string, except: number): Promise<void> {
  for (let pass = 0; pass < 20; pass++) {
    const pids = inNamespace(ns, except);
    if (pids.length === 0) return;
    for (const p of pids) signal(p, 'SIGKILL');
    for (let wait = 0; wait < 200 && pids.some((p) => mountNamespaceOf(p) === ns); wait++) await new Promise((r) => setTimeout(r, 10));
  }
}

/** The processes in mount namespace `ns` but `except`; none when `ns` is strata's own. */
function inNamespace(ns: string, except: number): number[] {
  if (ns === mountNamespaceOf(process.pid)) return [];
  return fs
    .readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((p) => p !== except && p !== process.pid && mountNamespaceOf(p) === ns);
}

function signal(pid: number, s: NodeJS.Signals): void {
  try {
    process.kill(pid, s);
  } catch {
    // gone already
  }
}

/**
 * Catches the signals strata relays while a run is set up, under way and cleaned up. Before
 * the command starts a signal only marks the run as interrupted (setup stops at its next
 * step, cleanup runs); while it runs, each is passed on, except a SIGINT or SIGQUIT while
 * strata is the terminal's foreground job: the terminal sent that to the command as well.
 */
class SignalRelay {
  received: NodeJS.Signals | undefined;
  private command: ChildProcess | undefined;
  private helper: Helper | undefined;
  private readonly handler = (s: NodeJS.Signals) => {
    this.received ??= s;
    if (!this.command || this.command.exitCode !== null || this.command.signalCode !== null) return;
    if (FROM_TERMINAL.has(s) && foregroundOnTerminal()) return;
    // To every process of the run, as a terminal signals its whole foreground job: a shell
    // waiting for its child acts on SIGINT only once the child is gone.
    this.command.kill(s);
    if (this.helper?.mountNs) for (const p of inNamespace(this.helper.mountNs, this.helper.pid)) signal(p, s);
  };

  constructor() {
    for (const s of RELAYED) process.on(s, this.handler);
  }

  relayTo(command: ChildProcess, helper: Helper): void {
    this.command = command;
    this.helper = helper;
  }

  /** The exit status of a run interrupted before its command started. */
  status(): number {
    return 128 + (os.constants.signals[this.received!] ?? 0);
  }

  release(): void {
    for (const s of RELAYED) process.off(s, this.handler);
  }
}

/** True when this process's group is the foreground job of its controlling terminal (/proc/self/stat tpgid = pgrp). */
function foregroundOnTerminal(): boolean {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the name: state ppid pgrp session tty_nr tpgid
    const [pgrp, ttyNr, tpgid] = [Number(f[2]), Number(f[4]), Number(f[5])];
    return ttyNr !== 0 && tpgid === pgrp;
  } catch {
    return false;
  }
}
