/**
 * The programs `strata exec` runs (util-linux unshare, nsenter, mount, umount; squashfuse,
 * erofsfuse, fusermount3), found once by absolute path and always run with an argument
 * vector, never a shell string, in the C locale so that their messages can be passed on.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Where tools are looked for after the caller's PATH (a user's PATH often lacks the sbin dirs). */
const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** The environment tools run in. */
export const TOOL_ENV = { PATH: SYSTEM_DIRS.join(':'), LC_ALL: 'C' };

/** Absolute path of an executable `name` on PATH or in the system directories, else undefined. */
export function findTool(name: string, pathVar: string | undefined = process.env.PATH): string | undefined {
  const dirs = [...(pathVar ?? '').split(':'), ...SYSTEM_DIRS].filter((d) => path.isAbsolute(d));
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      if (fs.statSync(p).isFile()) {
        fs.accessSync(p, fs.constants.X_OK);
        return p;
      }
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface ToolResult {
  code: number;
  /** The first line of what it printed on stderr (or stdout when stderr was empty). */
  message: string;
}

/** Runs a tool to its end; never throws (a tool that cannot start gives code -1). */
export function runTool(cmd: string, args: readonly string[]): Promise<ToolResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: TOOL_ENV });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.length < 64 && out.push(d));
    child.stderr.on('data', (d: Buffer) => err.length < 64 && err.push(d));
    child.on('error', (e) => resolve({ code: -1, message: e.message }));
    child.on('close', (code, signal) => {
      const text = Buffer.concat(err).toString('utf8').trim() || Buffer.concat(out).toString('utf8').trim();
      resolve({ code: code ?? -1, message: firstLine(text) || (signal ? `killed by ${signal}` : `exit ${code}`) });
    });
  });
}

export function firstLine(text: string): string {
  return text.split('\n').map((l) => l.trim()).find((l) => l !== '') ?? '';
}
