/**
 * Chart.js (the UMD build the server ships as /dashboard/vendor/chart.umd.js) behind a few chart kinds the
 * report needs. Animation is off: charts are drawn once, completely, which also respects reduced motion.
 * Every chart gets an aria-label, and the report shows the same numbers in tables for screen readers.
 */
import { el } from './lib.js';

const palette = { before: '#8a94a8', after: '#2357c6', third: '#1b7f3b', fourth: '#c26d00', chosen: '#d92d20' };

function setup() {
  const { Chart } = window;
  if (!Chart) throw new Error('chart.js did not load');
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  return Chart;
}

/** A canvas in a sized box; returns [box, canvas]. */
export function chartBox(id, label, height) {
  const canvas = el('canvas', { id, role: 'img', 'aria-label': label });
  return [el('div', { class: 'chart', style: `height:${height}px` }, canvas), canvas];
}

/**
 * Axis labels for tensor names that may be long and alike (`block_3/depthwise/depthwise_kernel`): the fewest
 * trailing path segments that tell a name from every other, the middle elided. When that is still longer
 * than `maxChars`, the distinguishing segment comes first (cut from its start, where names share a stem)
 * and the common tail goes: a label must tell its bar from the others before it says what they share.
 */
export function distinctLabels(names, maxChars = 32) {
  const split = names.map((name) => name.split('/'));
  const suffix = (segments, count) => segments.slice(-count).join('/');
  const cut = (text, room) => (text.length <= room ? text : `…${text.slice(text.length - room + 1)}`);
  return split.map((segments, i) => {
    const name = names[i];
    if (name.length <= maxChars) return name;
    let count = 1;
    while (
      count < segments.length &&
      split.some((other, j) => j !== i && suffix(other, count) === suffix(segments, count))
    )
      count++;
    if (count === 1) return cut(name.slice(name.lastIndexOf('/') + 1), maxChars);
    const distinct = segments[segments.length - count];
    const last = segments[segments.length - 1];
    const whole = count === 2 ? `${distinct}/${last}` : `${distinct}/…/${last}`;
    return whole.length <= maxChars ? whole : `${cut(distinct, maxChars - 2)}/…`;
  });
}

/** Characters of a 12 px label that fit in `pixels` (Chart.js gives a side axis at most half the chart). */
function labelRoom(canvas) {
  const width = canvas.parentElement?.clientWidth || 600;
  return Math.max(12, Math.floor(width / 2 / 7));
}

export function barChart(canvas, { labels, datasets, horizontal = false, xTitle, yTitle, logScale = false, max }) {
  const Chart = setup();
  const colors = [palette.before, palette.after, palette.third, palette.fourth];
  const valueAxis = horizontal ? 'x' : 'y';
  const scales = {
    x: { title: { display: Boolean(xTitle), text: xTitle } },
    y: { title: { display: Boolean(yTitle), text: yTitle } },
  };
  if (logScale) scales[valueAxis].type = 'logarithmic';
  if (max !== undefined) scales[valueAxis].max = max;
  return new Chart(canvas, {
    type: 'bar',
    data: {
      labels: distinctLabels(labels, horizontal ? labelRoom(canvas) : 32),
      datasets: datasets.map((d, i) => ({ backgroundColor: d.color ?? colors[i % colors.length], ...d })),
    },
    options: {
      indexAxis: horizontal ? 'y' : 'x',
      scales,
      plugins: {
        legend: { display: datasets.length > 1 },
        // The axis may show a shortened name; hovering a bar gives the whole one.
        tooltip: { callbacks: { title: (items) => labels[items[0].dataIndex] } },
      },
    },
  });
}

/** Before/after counts over shared bins: two translucent bar series on the same axis. */
export function histogramChart(canvas, histogram) {
  const Chart = setup();
  const centers = histogram.before.map((_, i) => (histogram.edges[i] + histogram.edges[i + 1]) / 2);
  return new Chart(canvas, {
    type: 'bar',
    data: {
      labels: centers.map((c) => c.toPrecision(3)),
      datasets: [
        {
          label: 'before (float)',
          data: histogram.before,
          backgroundColor: 'rgba(138,148,168,0.75)',
          grouped: false,
          barPercentage: 1,
          categoryPercentage: 1,
        },
        {
          label: 'after (quantized)',
          data: histogram.after,
          backgroundColor: 'rgba(35,87,198,0.55)',
          grouped: false,
          barPercentage: 0.6,
          categoryPercentage: 1,
        },
      ],
    },
    options: {
      scales: {
        x: { title: { display: true, text: 'weight value (bin centre)' } },
        y: { title: { display: true, text: 'count' } },
      },
    },
  });
}

/** Size (x) against a metric (y) for every config tried; the chosen one drawn larger, in red. */
export function frontierChart(canvas, points, metricName) {
  const Chart = setup();
  return new Chart(canvas, {
    type: 'scatter',
    data: {
      datasets: [
        {
          label: 'configs tried',
          data: points.filter((p) => !p.chosen),
          backgroundColor: palette.after,
          pointRadius: 4,
        },
        {
          label: 'chosen',
          data: points.filter((p) => p.chosen),
          backgroundColor: palette.chosen,
          pointRadius: 8,
          pointStyle: 'rectRot',
        },
      ],
    },
    options: {
      scales: { x: { title: { display: true, text: 'bytes' } }, y: { title: { display: true, text: metricName } } },
    },
  });
}
