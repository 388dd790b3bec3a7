// A horizontal bar chart of the ratios as a standalone SVG: one bar per ratio (its median), a
// whisker for its min–max, a dashed line at 1.0 and a tick where a target applies.
import type { Ratio } from './report.ts'

const WIDTH = 760
const LABEL_WIDTH = 230
const BAR_HEIGHT = 16
const ROW = 22
const GROUP_GAP = 34
const PLOT_WIDTH = WIDTH - LABEL_WIDTH - 70

export function ratioChart(ratios: readonly Ratio[], title: string, subtitle: string): string {
  const groups = new Map<string, Ratio[]>()
  for (const ratio of ratios) groups.set(ratio.group, [...(groups.get(ratio.group) ?? []), ratio])
  const finite = ratios.flatMap((r) => [r.ratio.max, r.target ?? 0]).filter(Number.isFinite)
  const top = Math.max(2, Math.ceil(Math.max(...finite) * 2) / 2)
  const x = (value: number) => LABEL_WIDTH + (Math.max(0, value) / top) * PLOT_WIDTH
  const parts: string[] = []
  let y = 56
  for (const [group, rows] of groups) {
    y += GROUP_GAP - 10
    parts.push(`<text x="10" y="${y}" class="group">${escapeXml(group)}</text>`)
    y += 8
    for (const row of rows) {
      const { median, min, max } = row.ratio
      const short = row.target !== undefined && median < row.target
      parts.push(`<text x="${LABEL_WIDTH - 8}" y="${y + BAR_HEIGHT - 4}" class="label">${escapeXml(row.label)}</text>`)
      parts.push(
        `<rect x="${LABEL_WIDTH}" y="${y}" width="${(x(median) - LABEL_WIDTH).toFixed(1)}" height="${BAR_HEIGHT}" class="${short ? 'bar short' : 'bar'}"/>`,
      )
      parts.push(
        `<line x1="${x(min).toFixed(1)}" x2="${x(max).toFixed(1)}" y1="${y + BAR_HEIGHT / 2}" y2="${y + BAR_HEIGHT / 2}" class="whisker"/>`,
      )
      if (row.target !== undefined) {
        parts.push(
          `<line x1="${x(row.target).toFixed(1)}" x2="${x(row.target).toFixed(1)}" y1="${y - 2}" y2="${y + BAR_HEIGHT + 2}" class="target"/>`,
        )
      }
      parts.push(
        `<text x="${(x(Math.max(median, max)) + 6).toFixed(1)}" y="${y + BAR_HEIGHT - 4}" class="value">${median.toFixed(2)}x</text>`,
      )
      y += ROW
    }
  }
  const height = y + 30
  const axis: string[] = []
  for (let tick = 0; tick <= top + 1e-9; tick += 0.5) {
    axis.push(`<line x1="${x(tick)}" x2="${x(tick)}" y1="56" y2="${height - 24}" class="${tick === 1 ? 'one' : 'grid'}"/>`)
    axis.push(`<text x="${x(tick)}" y="${height - 8}" class="tick">${tick.toFixed(1)}</text>`)
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, sans-serif" font-size="12">
<style>
.group { font-weight: 600; fill: #222 } .label { text-anchor: end; fill: #333 } .value { fill: #333 }
.bar { fill: #3b7dd8 } .bar.short { fill: #d8553b } .whisker { stroke: #111; stroke-width: 1.5 }
.target { stroke: #111; stroke-width: 2 } .grid { stroke: #ddd } .one { stroke: #888; stroke-dasharray: 4 3 }
.tick { text-anchor: middle; fill: #555 } .title { font-size: 14px; font-weight: 700 } .subtitle { fill: #555 }
</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="22" class="title">${escapeXml(title)}</text>
<text x="10" y="40" class="subtitle">${escapeXml(subtitle)}</text>
${axis.join('\n')}
${parts.join('\n')}
</svg>
`
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}
