/**
 * What `strata exec` decides before it touches anything: the binds, the environment, whether
 * this host lets the caller have a user namespace, and the messages the outer process and the
 * helper inside the namespaces (inside.ts) exchange. Pure: no I/O but what the caller passes in.
 *
 * The run, as Charliecloud's ch-run does it (spec/compose.md, "exec"):
 *
 *   strata (the caller)            mounts an image (kernel loop mount as root, squashfuse else)
 *    └ unshare [-U -r] -m          fresh mount namespace (and user namespace, caller = root)
 *       └ node inside.js           tmpfs on the stage; overlay root = lower tree + tmpfs upper;
 *                                  binds; the root remounted read-only; replies on fd 3, then
 *                                  waits until strata closes fd 3
 *   strata
 *    └ nsenter -t HELPER -m [-U --preserve-credentials]
 *       └ unshare [--map-user=UID --map-group=GID] --root=ROOT --wd=WD -- CMD…   (one pid: exec)
 *
 * The command is strata's own child, so its exit status is the run's and strata relays
 * signals to it directly. The namespaces live as long as a process is in them: when the
 * command and the helper are gone, every mount made inside goes with them.
 */
import * as path from 'node:path';
import type { EnvOp } from '../../store/index.js';

/** One bind mount from the host into the root. */
export interface Bind {
  /** Host path. */
  src: string;
  /** Where it appears inside the root (absolute). */
  dst: string;
  /**
   * A directory is bound with every mount below it (as ch-run does): a user namespace may
   * not bind a directory without the mounts it inherited below it (the kernel locks them).
   */
  kind: 'dir' | 'file';
  /** Skipped with a warning when the root cannot hold it; else the run fails. */
  optional: boolean;
}

/** The helper's instructions: one JSON line on its fd 3. */
export interface HelperPlan {
  /** An empty directory of the caller's: the helper mounts its tmpfs here. */
  stage: string;
  /** The tree to run in: the sandbox directory, or where the image is mounted. */
  lower: string;
  /** The helper runs as root of a user namespace (overlayfs then keeps its xattrs as user.*). */
  userns: boolean;
  binds: Bind[];
  /** Working directory inside the root; '/' when it cannot be had (a warning says so). */
  wd: string;
  /** argv[0] and the PATH it is looked up on inside the root. */
  command: string;
  path: string | undefined;
  /** util-linux mount(8). */
  mount: string;
}

/** The helper's answer: one JSON line on fd 3. */
export type HelperReply =
  | { ok: true; root: string; wd: string; warnings: string[] }
  | { ok: false; code: string; message: string; hint?: string };

/**
 * The binds of every run, ch-run's set with Apptainer's home and working directory:
 * /dev, /proc, /sys (with what is mounted below them), /tmp, the host's /etc/hosts and
 * /etc/resolv.conf, $HOME and the working directory (each unless it is / or already visible
 * through an earlier bind). `kind` says what the host has at a path, undefined when nothing.
 */
export function defaultBinds(host: { home: string | undefined; cwd: string; kind(p: string): 'dir' | 'file' | undefined }): Bind[] {
  const binds: Bind[] = [];
  for (const d of ['/dev', '/proc', '/sys']) {
    if (host.kind(d) === 'dir') binds.push({ src: d, dst: d, kind: 'dir', optional: false });
  }
  if (host.kind('/tmp') === 'dir') binds.push({ src: '/tmp', dst: '/tmp', kind: 'dir', optional: false });
  for (const f of ['/etc/hosts', '/etc/resolv.conf']) {
    if (host.kind(f) === 'file') binds.push({ src: f, dst: f, kind: 'file', optional: true });
  }
  for (const d of [host.home, host.cwd]) {
    // Never the host's / over the root (a run started in /, a HOME of /).
    if (d === undefined || !path.isAbsolute(d) || path.posix.normalize(d) === '/' || host.kind(d) !== 'dir') continue;
    if (binds.some((b) => b.kind === 'dir' && within(d, b.dst))) continue;
    binds.push({ src: d, dst: d, kind: 'dir', optional: true });
  }
  return binds;
}

/** True when `p` is `dir` or below it (both absolute, normalised). */
export function within(p: string, dir: string): boolean {
  const rel = path.posix.relative(dir, p);
  return rel === '' || (rel !== '..' && !rel.startsWith('../') && !path.posix.isAbsolute(rel));
}

/**
 * The command's environment: the caller's, with the stack's operations applied in order,
 * the way /.strata/env.sh applies them (prepend and append join with ':' and leave no empty
 * element when the variable was unset or empty).
 */
export function applyEnv(base: NodeJS.ProcessEnv, ops: readonly EnvOp[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  for (const o of ops) {
    const old = env[o.var];
    if (o.op === 'set') env[o.var] = o.value;
    else if (o.op === 'prepend') env[o.var] = old ? `${o.value}:${old}` : o.value;
    else env[o.var] = old ? `${old}:${o.value}` : o.value;
  }
  return env;
}

/**
 * Why this host refuses unprivileged user namespaces, from its sysctls (`read` gives a
 * /proc/sys file's text, undefined when the file is absent), or undefined when nothing says so.
 * Debian's and Ubuntu's kernel.unprivileged_userns_clone and everyone's user.max_user_namespaces
 * at 0 switch them off.
 */
export function userNamespacesOff(read: (file: string) => string | undefined): string | undefined {
  if (read('/proc/sys/kernel/unprivileged_userns_clone')?.trim() === '0') return 'kernel.unprivileged_userns_clone is 0';
  if (read('/proc/sys/user/max_user_namespaces')?.trim() === '0') return 'user.max_user_namespaces is 0';
  return undefined;
}

/** What to tell someone whose user namespace was refused anyway. */
export function userNamespaceHint(read: (file: string) => string | undefined): string {
  if (read('/proc/sys/kernel/apparmor_restrict_unprivileged_userns')?.trim() === '1') {
    return 'AppArmor restricts unprivileged user namespaces here (kernel.apparmor_restrict_unprivileged_userns = 1): ask your admin for a profile that allows unshare, or run as root';
  }
  return 'ask your admin to allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone = 1), or run as root';
}

/** A command's exit status as a shell reports it: its code, or 128 + the signal that ended it. */
export function exitStatus(code: number | null, signal: number | undefined): number {
  if (code !== null) return code;
  return 128 + (signal ?? 0);
}

/** The glibc execvp default when PATH is unset. */
export const DEFAULT_PATH = '/bin:/usr/bin';
