/**
 * The helper `strata exec` starts in a fresh mount namespace (and, for a user other than
 * root, a fresh user namespace in which the caller is root): `node inside.js`, run by
 * `unshare`, never by hand.
 *
 * Protocol on fd 3 (a socket pair with strata): strata writes one JSON line, a HelperPlan
 * (plan.ts); the helper builds the root and answers one JSON line, a HelperReply; then it
 * waits, holding the namespaces open, until strata closes its end, and exits 0.
 *
 * The root, all inside the namespace so that nothing of it is seen outside or outlives it:
 *
 *   STAGE               tmpfs, mode 0700
 *   STAGE/lower         bind of the tree (sandbox directory or mounted image)
 *   STAGE/upper, work   the overlay's upper layer: only mount points are ever made there
 *   STAGE/root          overlay lower + upper; binds into it; then remounted read-only
 *
 * Mount points missing from the tree are made in the upper layer, resolved inside the root
 * (root-path.ts), so no link in the tree sends a mkdir or a mount outside it.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { printable, StrataError } from '../../native/errors.js';
import { COMPOSE_ERR } from '../errors.js';
import { DEFAULT_PATH, type Bind, type HelperPlan, type HelperReply } from './plan.js';
import { makeMountPoint, resolveInRoot } from './root-path.js';
import { firstLine, TOOL_ENV } from './tools.js';

function mount(plan: HelperPlan, args: string[], what: string): string | undefined {
  const r = spawnSync(plan.mount, args, { cwd: plan.stage, env: TOOL_ENV, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status === 0) return undefined;
  return `${what}: ${firstLine(r.stderr ?? '') || r.error?.message || `mount exited ${r.status}`}`;
}

function mustMount(plan: HelperPlan, args: string[], what: string): void {
  const failed = mount(plan, args, what);
  if (failed) throw new StrataError(COMPOSE_ERR.EXEC_SETUP, `cannot set up the root: ${failed}`);
}

function build(plan: HelperPlan): HelperReply {
  const warnings: string[] = [];
  mustMount(plan, ['-t', 'tmpfs', '-o', 'mode=0700,size=4m,nodev,nosuid', 'strata-exec', plan.stage], 'tmpfs on the stage');
  for (const d of ['lower', 'upper', 'work', 'root']) fs.mkdirSync(path.join(plan.stage, d), { mode: 0o700 });
  // The overlay's root directory takes its mode and owner from the upper layer's: make them the tree's.
  const top = fs.statSync(plan.lower);
  const upper = path.join(plan.stage, 'upper');
  fs.chmodSync(upper, top.mode & 0o7777);
  try {
    fs.chownSync(upper, top.uid, top.gid);
  } catch {
    // An owner not mapped into this user namespace: the caller owns the root directory.
  }
  // Relative paths (the helper's mounts run in STAGE): the overlay's option string then never
  // holds a ',' or ':' from the tree's own path.
  mustMount(plan, ['--bind', plan.lower, 'lower'], 'bind of the tree');
  // Mount points go into the upper layer before the overlay is mounted (in a user namespace
  // the caller may not create entries in the tree's root-owned directories through it).
  const points = plan.binds.map((b) => mountPoint(plan, b));
  const opts = ['nodev', 'nosuid', 'lowerdir=lower', 'upperdir=upper', 'workdir=work', ...(plan.userns ? ['userxattr'] : [])];
  mustMount(plan, ['-t', 'overlay', '-o', opts.join(','), 'strata-exec', 'root'], 'overlay on the tree');
  const root = path.join(plan.stage, 'root');

  plan.binds.forEach((b, i) => {
    const p = points[i]!;
    const failed = typeof p === 'object' ? p.failed : mount(plan, [b.kind === 'dir' ? '--rbind' : '--bind', b.src, path.join(root, p)], `bind of ${printable(b.src)}`);
    if (!failed) return;
    if (!b.optional) throw new StrataError(COMPOSE_ERR.EXEC_SETUP, `cannot set up the root: ${failed}`);
    warnings.push(`${failed}; running without it`);
  });
  mustMount(plan, ['-o', 'remount,bind,ro', 'root'], 'read-only remount of the root');

  let wd = '/';
  const w = resolveInRoot(root, plan.wd);
  if (w?.stat.isDirectory()) wd = w.inside;
  else if (plan.wd !== '/') warnings.push(`${printable(plan.wd)} is not in the root; working in /`);

  findCommand(root, plan.command, plan.path, wd);
  return { ok: true, root, wd, warnings };
}

/** Where bind `b` goes inside the root, its mount point made; or why it cannot go. */
function mountPoint(plan: HelperPlan, b: Bind): string | { failed: string } {
  const what = `bind of ${printable(b.src)}`;
  try {
    const at = makeMountPoint(path.join(plan.stage, 'lower'), path.join(plan.stage, 'upper'), b.dst, b.kind);
    return at ?? { failed: `${what}: the root has no ${b.kind === 'dir' ? 'directory' : 'file'} at ${printable(b.dst)}` };
  } catch (e) {
    return { failed: `${what}: ${(e as Error).message}` };
  }
}

/** Looks argv[0] up as execvp would inside the root; throws the shell's 127 / 126 cases. */
function findCommand(root: string, command: string, pathVar: string | undefined, wd: string): void {
  const candidates = command.includes('/')
    ? [path.posix.resolve(wd, command)]
    : (pathVar ?? DEFAULT_PATH).split(':').map((d) => path.posix.resolve(wd, d === '' ? '.' : d, command));
  let denied: string | undefined;
  for (const c of candidates) {
    const r = resolveInRoot(root, c);
    if (!r || !r.stat.isFile()) continue;
    try {
      fs.accessSync(r.host, fs.constants.X_OK);
      return;
    } catch {
      denied ??= c;
    }
  }
  if (denied) throw new StrataError(COMPOSE_ERR.COMMAND_NOT_EXECUTABLE, `${printable(denied)} is not executable`);
  throw new StrataError(COMPOSE_ERR.COMMAND_NOT_FOUND, command.includes('/') ? `${printable(command)}: no such file` : `${printable(command)}: command not found`, {
    hint: command.includes('/') ? undefined : `PATH inside is ${printable(pathVar ?? DEFAULT_PATH)}`,
  });
}

function main(): void {
  const sock = new net.Socket({ fd: 3, readable: true, writable: true });
  let buf = '';
  let started = false;
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    if (started) return;
    buf += chunk;
    const nl = buf.indexOf('\n');
    if (nl < 0) return;
    started = true;
    let reply: HelperReply;
    try {
      reply = build(JSON.parse(buf.slice(0, nl)) as HelperPlan);
    } catch (e) {
      const err = e instanceof StrataError ? e : new StrataError(COMPOSE_ERR.EXEC_SETUP, `cannot set up the root: ${(e as Error).message}`);
      reply = { ok: false, code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) };
    }
    sock.write(`${JSON.stringify(reply)}\n`);
  });
  // strata closes its end when the command is over (or strata is gone): the namespaces may go.
  sock.on('end', () => process.exit(0));
  sock.on('error', () => process.exit(0));
}

main();
