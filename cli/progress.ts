/**
 * A progress bar on stderr, only when stdout and stderr are terminals; nothing otherwise.
 */
export interface Progress {
  update(done: number, total?: number): void;
  done(): void;
}

const quiet: Progress = { update() {}, done() {} };

export function progress(label: string, enabled: boolean): Progress {
  if (!enabled || !process.stdout.isTTY || !process.stderr.isTTY) return quiet;
  let last = 0;
  const render = (done: number, total?: number) => {
    const width = 30;
    let bar: string;
    if (total && total > 0) {
      const f = Math.min(1, done / total);
      const n = Math.round(f * width);
      bar = `[${'#'.repeat(n)}${'.'.repeat(width - n)}] ${Math.round(f * 100)}%`;
    } else bar = '';
    process.stderr.write(`\r${label} ${bar} ${human(done)}${total ? ` / ${human(total)}` : ''}\x1b[K`);
  };
  return {
    update(done, total) {
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      render(done, total);
    },
    done() {
      process.stderr.write('\r\x1b[K');
    },
  };
}

export function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
