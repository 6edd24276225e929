/**
 * Spill files leave nothing behind however the process ends (store/spill.ts): a sorter's run
 * file loses its name as soon as it is open, so a process killed mid-build (the OOM killer, a
 * batch system's time limit) leaves no run in /tmp or the store's tmp/, where a shared login
 * node would keep hundreds of megabytes of them until someone looked.
 *
 * - A Node process that spills and then kills itself with SIGKILL leaves its directory empty.
 * - `strata unsquash` killed with SIGKILL while its ACL index is spilled (its descriptor seen
 *   open in /proc) leaves $TMPDIR empty. Before, it left a strata-unsquash-* directory with
 *   the runs in it. Where $TMPDIR has no O_TMPFILE, a run file is named for the moment
 *   between its open and its unlink, so the process is stopped where nothing in $TMPDIR has a
 *   name, and killed there.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { strataAsync } from './helpers/cli.js';
import { missing } from './helpers/probe.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';

const test = suite<{ dir: string }>('spill files after a kill');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-spill-kill-');
});
test.after.each((ctx) => removeDir(ctx.dir));

const spillModule = new URL('../store/spill.js', import.meta.url).href;

test('a process killed while its sorter holds runs on disk leaves no file behind', ({ dir }) => {
  const scratch = join(dir, 'scratch');
  mkdirSync(scratch);
  // Spills a few runs, reads some of them back, and is killed (SIGKILL) with the sorter live.
  const script = `
    import { SpillSorter, textCodec } from ${JSON.stringify(spillModule)};
    import { readdirSync } from 'node:fs';
    const s = new SpillSorter({ compare: (a, b) => (a < b ? -1 : a > b ? 1 : 0), codec: textCodec, dir: ${JSON.stringify(scratch)}, budget: 4096 });
    for (let i = 0; i < 2000; i++) s.push(String((i * 7919) % 2000).padStart(6, '0'));
    const it = s.sorted();
    it.next();
    process.stdout.write(JSON.stringify({ spilled: s.spilled, names: readdirSync(${JSON.stringify(scratch)}) }));
    process.kill(process.pid, 'SIGKILL');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.is(r.signal, 'SIGKILL', r.stderr);
  const seen = JSON.parse(r.stdout) as { spilled: boolean; names: string[] };
  assert.ok(seen.spilled, 'the sorter wrote runs');
  assert.equal(seen.names, [], 'no run file has a name while the sorter uses it');
  assert.equal(readdirSync(scratch), [], 'nothing left after the kill');
});

const why = missing({ tools: ['mksquashfs'], check: () => (process.platform === 'linux' ? undefined : 'reads /proc') });
if (why) console.log(`skip: unsquash killed mid-run: ${why}`);
else {
  test('strata unsquash killed while its ACL index is spilled leaves $TMPDIR empty', async ({ dir }) => {
    // An image whose /.strata/acl.json has an entry per file: a 256-byte budget spills it.
    const tree = join(dir, 'tree');
    const N = 3000;
    mkdirSync(join(tree, '.strata'), { recursive: true });
    mkdirSync(join(tree, 'd'));
    const entries: Record<string, unknown> = {};
    for (let i = 0; i < N; i++) {
      const name = `d/f${String(i).padStart(5, '0')}`;
      writeFileSync(join(tree, name), `${i}\n`);
      entries[name] = { mode: 0o640, access: 'user::rw-,user:1001:r--,group::r--,mask::r--,other::---' };
    }
    writeFileSync(join(tree, '.strata/acl.json'), JSON.stringify({ aclVersion: 1, entries }));
    const image = join(dir, 'acl.sqfs');
    mustRun('mksquashfs', [tree, image, '-noappend', '-quiet', '-no-progress']);

    const tmp = join(dir, 'tmp');
    mkdirSync(tmp);
    const run = strataAsync(['unsquash', image, join(dir, 'out')], { env: { TMPDIR: tmp, STRATA_MEMORY_BUDGET: '256' } });
    // Waits for the spill file to be open (by its descriptor: it has no name), then kills.
    const fds = `/proc/${run.pid}/fd`;
    let seen: string | undefined;
    const until = Date.now() + 60_000;
    const linkOf = (fd: string) => {
      try {
        return readlinkSync(join(fds, fd), { encoding: 'utf8' });
      } catch {
        return ''; // closed since the listing
      }
    };
    let ended = false;
    void run.done.then(() => (ended = true));
    const spillOpen = () => {
      let open: string[] = [];
      try {
        open = readdirSync(fds);
      } catch {
        // not started yet, or ended (run.done says which)
      }
      // A file made with O_TMPFILE shows as `${tmp}/#<inode> (deleted)`, a named one unlinked
      // as `${tmp}/spill-... (deleted)`.
      return open.map(linkOf).find((target) => target.startsWith(`${tmp}/`) && target.endsWith(' (deleted)'));
    };
    while (seen === undefined && !ended && Date.now() < until) {
      seen = spillOpen();
      if (seen === undefined) await new Promise((r) => setTimeout(r, 2));
    }
    // Where the filesystem cannot make a file without a name (no O_TMPFILE), a run file has
    // its name for the moment between its open and its unlink. The process is stopped where
    // $TMPDIR holds no name (tried again a little later otherwise, a bounded number of times),
    // then killed there.
    const signal = (sig: NodeJS.Signals) => {
      try {
        process.kill(run.pid, sig);
      } catch {
        // ended meanwhile: the assertions below say what was seen
      }
    };
    let named: string[] = [];
    for (let tries = 0; tries < 100 && !ended; tries++) {
      signal('SIGSTOP');
      named = readdirSync(tmp);
      if (named.length === 0) break;
      signal('SIGCONT');
      await new Promise((r) => setTimeout(r, 1));
    }
    run.kill('SIGKILL');
    const r = await run.done;
    assert.ok(seen !== undefined, `the spill file was seen open before unsquash ended (exit ${r.code}, ${r.signal}): ${r.stderr}`);
    assert.equal(named, [], 'with a spill file open, $TMPDIR holds no name');
    assert.is(r.signal, 'SIGKILL');
    assert.equal(readdirSync(tmp), [], 'nothing left in $TMPDIR after the kill');
  });
}

test.run();
