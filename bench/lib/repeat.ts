/**
 * Repeated runs of one scenario at one N (`--repeat K`). On a machine whose
 * speed moves from run to run (the simulated hosts share its cores and its
 * memory), one run says little; the run reported is the median one, and the
 * others are kept beside it.
 */
import type { ScenarioResult } from './types';

/** Time of a run for ordering: a run that never finished counts as the slowest. */
const timeOf = (r: ScenarioResult): number => r.lastS ?? Number.POSITIVE_INFINITY;

/**
 * The run to report for runs of one scenario at one N: the one with the median
 * time until the last host was done (the lower of the two middle ones for an
 * even count), with `repeats` holding every run's times in run order. It
 * counts as verified only when every run verified.
 */
export function medianRun(runs: ScenarioResult[]): ScenarioResult {
  if (runs.length === 0) throw new Error('no runs');
  if (runs.length === 1) return runs[0];
  const order = runs.map((_r, i) => i).sort((a, b) => timeOf(runs[a]) - timeOf(runs[b]) || a - b);
  const pick = order[Math.floor((runs.length - 1) / 2)];
  const chosen = runs[pick];
  const failed = runs.map((r, i) => (r.verified ? -1 : i + 1)).filter((i) => i > 0);
  return {
    ...chosen,
    verified: failed.length === 0,
    notes: [
      ...chosen.notes,
      `median of ${runs.length} runs (run ${pick + 1} reported)`,
      ...(failed.length > 0 ? [`run${failed.length > 1 ? 's' : ''} ${failed.join(', ')} of ${runs.length} did not verify`] : []),
    ],
    repeats: {
      lastS: runs.map((r) => r.lastS),
      medianS: runs.map((r) => r.medianS),
      cpuFloorS: runs.map((r) => r.cpuFloorS),
      verified: runs.map((r) => r.verified),
    },
  };
}

/** How many times a scenario runs for `--repeat K`: direct once, every other scenario K times. */
export function runsFor(scenario: ScenarioResult['scenario'], repeat: number): number {
  // direct's time is N x F over the origin's uplink; it moved by nothing
  // measurable from run to run (179.6 s at N = 16 and 359.3 s at N = 32 in
  // two runs each), and one run takes N x 11 s at the defaults.
  return scenario === 'direct' ? 1 : repeat;
}
