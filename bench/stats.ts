/** Median and range of repeated samples: what the report prints for every figure. */
export interface Summary {
  median: number
  min: number
  max: number
  samples: number
}

export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN, samples: 0 }
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  const median = sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
  return { median, min: sorted[0], max: sorted[sorted.length - 1], samples: sorted.length }
}

/** Ratios of samples taken side by side (round i of A against round i of B), never of medians. */
export function pairedRatios(numerators: readonly number[], denominators: readonly number[]): number[] {
  const count = Math.min(numerators.length, denominators.length)
  return Array.from({ length: count }, (_, i) => numerators[i] / denominators[i])
}

/** The order of contenders in round `round`: rotated each round so that none always runs first. */
export function rotation<T>(items: readonly T[], round: number): T[] {
  const shift = round % items.length
  return [...items.slice(shift), ...items.slice(0, shift)]
}
