/**
 * The scale section's figure: wall time and peak RSS against the number of files in the
 * generated layer, both axes logarithmic, one line per tool and operation (strata solid,
 * peers dashed). Plain SVG text, no dependencies. A run stopped at the time limit is drawn
 * hollow (its time is a lower bound); a cell that was not run is left out.
 */
import { rssOf, type Outcome } from './harness.js';
import { MAX_RSS_MIB } from './harness.js';
import { SERIES, short, type ScalePoint, type Series } from './scale.js';

const COLORS: Record<Series, string> = {
  'strata import': '#1b9e77',
  'strata sandbox': '#d95f02',
  'strata squash': '#7570b3',
  'strata EROFS': '#e7298a',
  sha256sum: '#66a61e',
  'GNU tar': '#a6761d',
  mksquashfs: '#1f78b4',
  tar2sqfs: '#e6ab02',
  'mkfs.erofs': '#666666',
};

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const num = (x: number) => (Math.round(x * 10) / 10).toString();

interface Pt {
  x: number;
  y: number;
  stopped: boolean;
}

/** Decade ticks covering [lo, hi] (with 2 and 5 between when the range is under two decades). */
function logTicks(lo: number, hi: number): number[] {
  const a = Math.floor(Math.log10(lo));
  const b = Math.ceil(Math.log10(hi));
  const ticks: number[] = [];
  for (let e = a; e <= b; e++) {
    for (const m of b - a <= 2 ? [1, 2, 5] : [1]) {
      const t = m * 10 ** e;
      if (t >= lo * 0.999 && t <= hi * 1.001) ticks.push(t);
    }
  }
  return ticks;
}

function fmtTick(v: number, unit: string): string {
  const s = v >= 1 ? String(Math.round(v)) : String(Number(v.toPrecision(1)));
  return `${s}${unit}`;
}

/**
 * Two panels (time, RSS) and a legend. `points` are the scale points in size order; the
 * series of each point are the Outcomes of bench/scale.ts.
 */
export function scalePlot(points: ScalePoint[], title: string): string {
  const W = 980;
  const H = 470;
  const panelW = 360;
  const panelH = 300;
  const top = 60;
  const lefts = [70, 70 + panelW + 90];
  const xs = points.map((p) => p.n);
  let xlo = Math.min(...xs);
  let xhi = Math.max(...xs);
  if (xlo === xhi) {
    xlo /= 2;
    xhi *= 2;
  }
  xlo /= 1.5;
  xhi *= 1.5;
  const metric = (which: 0 | 1) => (o: Outcome | undefined): number | undefined => {
    if (!o) return undefined;
    if (which === 0) return o.kind === 'measured' ? o.m.median : o.kind === 'timeout' ? o.seconds : undefined;
    const r = rssOf(o);
    return r === undefined ? undefined : r / 1024;
  };
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`);

  const panels: [string, string, 0 | 1][] = [
    ['wall time (s, log)', ' s', 0],
    ['peak RSS (MiB, log)', '', 1],
  ];
  for (const [pi, [label, unit, which]] of panels.entries()) {
    const left = lefts[pi]!;
    const get = metric(which);
    const series = new Map<Series, Pt[]>();
    const all: number[] = [];
    for (const name of SERIES) {
      const pts: Pt[] = [];
      for (const p of points) {
        const o = p.series[name];
        const y = get(o);
        if (y === undefined || !(y > 0)) continue;
        pts.push({ x: p.n, y, stopped: o!.kind === 'timeout' });
        all.push(y);
      }
      if (pts.length) series.set(name, pts);
    }
    if (which === 1) all.push(MAX_RSS_MIB);
    let ylo = all.length ? Math.min(...all) : 1;
    let yhi = all.length ? Math.max(...all) : 10;
    ylo = 10 ** Math.floor(Math.log10(ylo));
    yhi = 10 ** Math.ceil(Math.log10(yhi * 1.05));
    if (ylo === yhi) yhi *= 10;
    const X = (x: number) => left + ((Math.log10(x) - Math.log10(xlo)) / (Math.log10(xhi) - Math.log10(xlo))) * panelW;
    const Y = (y: number) => top + panelH - ((Math.log10(y) - Math.log10(ylo)) / (Math.log10(yhi) - Math.log10(ylo))) * panelH;
    out.push(`<text x="${left + panelW / 2}" y="${top - 12}" text-anchor="middle" font-size="13">${esc(label)}</text>`);
    out.push(`<rect x="${left}" y="${top}" width="${panelW}" height="${panelH}" fill="none" stroke="#000"/>`);
    for (const t of logTicks(ylo, yhi)) {
      const y = num(Y(t));
      out.push(`<line x1="${left}" x2="${left + panelW}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
      out.push(`<text x="${left - 6}" y="${y}" dy="4" text-anchor="end">${esc(fmtTick(t, unit))}</text>`);
    }
    for (const t of xs) {
      const x = num(X(t));
      out.push(`<line x1="${x}" x2="${x}" y1="${top}" y2="${top + panelH}" stroke="#ddd"/>`);
      out.push(`<text x="${x}" y="${top + panelH + 16}" text-anchor="middle">${esc(short(t))}</text>`);
    }
    out.push(`<text x="${left + panelW / 2}" y="${top + panelH + 34}" text-anchor="middle">files in the generated layer (log)</text>`);
    if (which === 1) {
      const y = num(Y(MAX_RSS_MIB));
      out.push(`<line x1="${left}" x2="${left + panelW}" y1="${y}" y2="${y}" stroke="#c00" stroke-dasharray="2,3"/>`);
      out.push(`<text x="${left + panelW - 4}" y="${y}" dy="-4" text-anchor="end" fill="#c00">goal ${MAX_RSS_MIB} MiB</text>`);
    }
    for (const [name, pts] of series) {
      const strata = name.startsWith('strata');
      const color = COLORS[name];
      if (pts.length > 1) {
        const d = pts.map((p, i) => `${i ? 'L' : 'M'}${num(X(p.x))},${num(Y(p.y))}`).join(' ');
        out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="${strata ? 2.5 : 1.5}"${strata ? '' : ' stroke-dasharray="6,4"'}/>`);
      }
      for (const p of pts) out.push(marker(X(p.x), Y(p.y), strata, color, p.stopped));
    }
  }

  // Legend: two rows under the panels.
  const ly = top + panelH + 62;
  SERIES.forEach((name, i) => {
    const col = i % 5;
    const row = Math.floor(i / 5);
    const x = 70 + col * 180;
    const y = ly + row * 22;
    const strata = name.startsWith('strata');
    out.push(`<line x1="${x}" x2="${x + 28}" y1="${y}" y2="${y}" stroke="${COLORS[name]}" stroke-width="${strata ? 2.5 : 1.5}"${strata ? '' : ' stroke-dasharray="6,4"'}/>`);
    out.push(marker(x + 14, y, strata, COLORS[name], false));
    out.push(`<text x="${x + 36}" y="${y}" dy="4">${esc(name)}</text>`);
  });
  out.push(`<text x="70" y="${ly + 50}" fill="#444">hollow marker: stopped at the time limit (time is a lower bound); missing point: not run or not available</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function marker(x: number, y: number, strata: boolean, color: string, hollow: boolean): string {
  const fill = hollow ? '#fff' : color;
  if (strata) return `<circle cx="${num(x)}" cy="${num(y)}" r="4" fill="${fill}" stroke="${color}" stroke-width="1.5"/>`;
  return `<rect x="${num(x - 3.5)}" y="${num(y - 3.5)}" width="7" height="7" fill="${fill}" stroke="${color}" stroke-width="1.5"/>`;
}
