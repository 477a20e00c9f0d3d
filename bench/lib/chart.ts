/**
 * The results chart, written as plain SVG: time until the last host is done
 * versus the number of peer hosts N, one line per scenario, with the lower
 * bound max(F/Us, F/d, N*F/(Us + N*u)) and, when `direct` ran, the time the
 * origin's uplink alone needs for N copies (N*F/Us).
 */
import { lowerBoundS, fmtBytes, fmtRate } from './stats';
import { SCENARIOS, type ScenarioName, type ScenarioResult } from './types';

const W = 760;
const H = 470;
const M = { left: 72, right: 24, top: 64, bottom: 58 };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

const STYLE: Record<ScenarioName, { color: string; label: string; marker: 'circle' | 'square' | 'triangle' }> = {
  direct: { color: '#c0392b', label: 'direct (curl from the origin)', marker: 'circle' },
  p2p: { color: '#1f6fb4', label: 'p2p (dfget + supernode)', marker: 'square' },
  image: { color: '#2e8b3e', label: 'image (skopeo via dfdaemon)', marker: 'triangle' },
  relay: { color: '#8e44ad', label: 'relay (bare Node, each host gets and sends F)', marker: 'circle' },
};

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const f1 = (x: number): string => (Math.round(x * 10) / 10).toString();

/** A "nice" tick step (1, 2 or 5 times a power of ten) for about `count` ticks over [0, max]. */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

function groupBy<T>(xs: T[], key: (x: T) => number): T[][] {
  const m = new Map<number, T[]>();
  for (const x of xs) {
    const k = key(x);
    const g = m.get(k);
    if (g) g.push(x); else m.set(k, [x]);
  }
  return [...m.values()];
}

function marker(kind: 'circle' | 'square' | 'triangle', x: number, y: number, color: string): string {
  switch (kind) {
    case 'circle': return `<circle cx="${f1(x)}" cy="${f1(y)}" r="4.5" fill="${color}"/>`;
    case 'square': return `<rect x="${f1(x - 4)}" y="${f1(y - 4)}" width="8" height="8" fill="${color}"/>`;
    case 'triangle': return `<path d="M${f1(x)},${f1(y - 5.5)} L${f1(x + 5)},${f1(y + 4)} L${f1(x - 5)},${f1(y + 4)} Z" fill="${color}"/>`;
  }
}

export interface ChartInfo {
  /** Title line 2, e.g. the machine. */
  subtitle?: string;
}

export function renderChart(results: ScenarioResult[], info: ChartInfo = {}): string {
  const ok = results.filter((r) => r.lastS !== null);
  const ns = [...new Set(results.map((r) => r.peers))].sort((a, b) => a - b);
  const rate = results[0]?.rateBitsPerSec ?? 50e6;
  // The bound and the origin-alone line are for the plain file (direct/p2p); image F is close to it.
  const fileBytes = results.find((r) => r.scenario !== 'image')?.fileBytes ?? results[0]?.fileBytes ?? 0;
  const maxN = Math.max(1, ...ns);
  const xMax = ns.length > 1 ? maxN * 1.04 : maxN * 1.25;
  const haveDirect = ok.some((r) => r.scenario === 'direct');
  const boundAt = (n: number): number => lowerBoundS(fileBytes, n, rate, rate, rate);
  const originAlone = (n: number): number => (n * fileBytes * 8) / rate;

  const yData = [...ok.map((r) => r.lastS as number), boundAt(maxN)];
  const yStep = niceStep(Math.max(1, ...yData) * 1.08, 6);
  const yMax = Math.ceil((Math.max(1, ...yData) * 1.08) / yStep) * yStep;
  const X = (n: number): number => M.left + (n / xMax) * PW;
  const Y = (s: number): number => M.top + PH - (s / yMax) * PH;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<defs><clipPath id="plot"><rect x="${M.left}" y="${M.top}" width="${PW}" height="${PH}"/></clipPath></defs>`);
  out.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">Time until the last host is done</text>`);
  const sub = `${fmtBytes(fileBytes)} file, ${fmtRate(rate)} links (origin, supernode, every peer)${info.subtitle ? `, ${info.subtitle}` : ''}`;
  out.push(`<text x="${W / 2}" y="44" text-anchor="middle" fill="#444">${esc(sub)}</text>`);

  // Grid and axes.
  for (let s = 0; s <= yMax + 1e-9; s += yStep) {
    const y = Y(s);
    out.push(`<line x1="${M.left}" y1="${f1(y)}" x2="${M.left + PW}" y2="${f1(y)}" stroke="#e6e6e6"/>`);
    out.push(`<text x="${M.left - 8}" y="${f1(y + 4)}" text-anchor="end" fill="#333">${Number(s.toPrecision(6))}</text>`);
  }
  for (const n of [0, ...ns]) {
    const x = X(n);
    out.push(`<line x1="${f1(x)}" y1="${M.top}" x2="${f1(x)}" y2="${M.top + PH}" stroke="#f0f0f0"/>`);
    out.push(`<line x1="${f1(x)}" y1="${M.top + PH}" x2="${f1(x)}" y2="${M.top + PH + 5}" stroke="#333"/>`);
    out.push(`<text x="${f1(x)}" y="${M.top + PH + 19}" text-anchor="middle" fill="#333">${n}</text>`);
  }
  out.push(`<line x1="${M.left}" y1="${M.top + PH}" x2="${M.left + PW}" y2="${M.top + PH}" stroke="#333"/>`);
  out.push(`<line x1="${M.left}" y1="${M.top}" x2="${M.left}" y2="${M.top + PH}" stroke="#333"/>`);
  out.push(`<text x="${M.left + PW / 2}" y="${H - 14}" text-anchor="middle" fill="#222">peer hosts (N), all starting at once</text>`);
  out.push(`<text transform="translate(18 ${M.top + PH / 2}) rotate(-90)" text-anchor="middle" fill="#222">seconds</text>`);

  // Reference curves, evaluated at every integer N (the bound bends where N*F/(Us+N*u) overtakes F/Us).
  const curve = (fn: (n: number) => number): string => {
    const pts: string[] = [];
    for (let n = 1; n <= Math.ceil(xMax); n++) pts.push(`${f1(X(n))},${f1(Y(fn(n)))}`);
    return pts.join(' ');
  };
  out.push('<g clip-path="url(#plot)">');
  if (haveDirect) out.push(`<polyline points="${curve(originAlone)}" fill="none" stroke="#c0392b" stroke-opacity="0.45" stroke-width="1.3" stroke-dasharray="2 4"/>`);
  out.push(`<polyline points="${curve(boundAt)}" fill="none" stroke="#555" stroke-width="1.6" stroke-dasharray="7 5"/>`);

  // Measured series; value labels are collected and placed after, so that
  // labels of points close together (p2p and image) do not overlap.
  const labels: Array<{ x: number; y: number; text: string; color: string }> = [];
  for (const sc of SCENARIOS) {
    const pts = ok.filter((r) => r.scenario === sc).sort((a, b) => a.peers - b.peers);
    if (pts.length === 0) continue;
    const st = STYLE[sc];
    if (pts.length > 1) {
      out.push(`<polyline points="${pts.map((r) => `${f1(X(r.peers))},${f1(Y(r.lastS as number))}`).join(' ')}" fill="none" stroke="${st.color}" stroke-width="2.2"/>`);
    }
    for (const r of pts) {
      const x = X(r.peers);
      const y = Y(r.lastS as number);
      out.push(marker(st.marker, x, y, st.color));
      const unverified = r.verified ? '' : ' (unverified)';
      labels.push({ x: x + 8, y: y - 7, text: `${f1(r.lastS as number)} s${unverified}`, color: st.color });
    }
  }
  out.push('</g>');
  for (const group of groupBy(labels, (l) => Math.round(l.x))) {
    group.sort((p, q) => p.y - q.y);
    for (let i = 1; i < group.length; i++) group[i].y = Math.max(group[i].y, group[i - 1].y + 13);
    // Points close to the x axis (every scenario near the bound) would push
    // their labels below it: the stack moves up to end inside the plot.
    const over = group[group.length - 1].y - (M.top + PH - 4);
    if (over > 0) for (const l of group) l.y -= over;
    for (const l of group) {
      // Near the right edge, put the label on the left of its point.
      const right = l.x + l.text.length * 6.2 > W - 4;
      const x = right ? l.x - 16 : l.x;
      out.push(`<text x="${f1(x)}" y="${f1(l.y)}" fill="${l.color}" font-size="11"${right ? ' text-anchor="end"' : ''}>${esc(l.text)}</text>`);
    }
  }

  // Legend, top left inside the plot.
  const legend: Array<{ draw: (x: number, y: number) => string; label: string }> = [];
  for (const sc of SCENARIOS) {
    if (!ok.some((r) => r.scenario === sc)) continue;
    const st = STYLE[sc];
    legend.push({
      draw: (x, y) => `<line x1="${x}" y1="${y}" x2="${x + 26}" y2="${y}" stroke="${st.color}" stroke-width="2.2"/>${marker(st.marker, x + 13, y, st.color)}`,
      label: st.label,
    });
  }
  legend.push({
    draw: (x, y) => `<line x1="${x}" y1="${y}" x2="${x + 26}" y2="${y}" stroke="#555" stroke-width="1.6" stroke-dasharray="7 5"/>`,
    label: 'lower bound max(F/Us, F/d, N·F/(Us+N·u))',
  });
  if (haveDirect) {
    legend.push({
      draw: (x, y) => `<line x1="${x}" y1="${y}" x2="${x + 26}" y2="${y}" stroke="#c0392b" stroke-opacity="0.45" stroke-width="1.3" stroke-dasharray="2 4"/>`,
      label: 'N·F/Us: the origin uplink sending N copies',
    });
  }
  const lx = M.left + 14;
  const ly = M.top + 12;
  out.push(`<rect x="${lx - 8}" y="${ly - 12}" width="310" height="${legend.length * 20 + 6}" fill="#ffffff" fill-opacity="0.9" stroke="#ccc"/>`);
  legend.forEach((l, i) => {
    const y = ly + i * 20;
    out.push(l.draw(lx, y));
    out.push(`<text x="${lx + 34}" y="${y + 4}" fill="#222">${esc(l.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
