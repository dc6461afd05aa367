// Runs started per day, as a Chart.js bar chart, with the same numbers as a table for screen
// readers (and anyone who wants them exactly), and the period's executions by status.
import React, { useEffect, useRef } from 'react';
import { BarController, BarElement, CategoryScale, Chart, LinearScale, Tooltip } from 'chart.js';

// Only what a bar chart needs, so the bundle carries no other chart types.
Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip);

const STATUS_LABELS = [
  ['RUNNING', 'Running'],
  ['WAITING', 'Waiting'],
  ['COMPLETED', 'Completed'],
  ['EXITED', 'Exited'],
  ['FAILED', 'Failed'],
  ['CANCELLED', 'Cancelled'],
];

// The admin's own colours (its CSS variables), so the chart follows the light or dark theme.
function themeColours(element) {
  const style = getComputedStyle(element);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return {
    bar: read('--link-fg', '#447e9b'),
    text: read('--body-quiet-color', '#666'),
    grid: read('--hairline-color', '#e8e8e8'),
  };
}

function paint(chart, colours) {
  chart.data.datasets[0].backgroundColor = colours.bar;
  chart.options.scales.x.ticks.color = colours.text;
  chart.options.scales.y.ticks.color = colours.text;
  chart.options.scales.y.grid.color = colours.grid;
}

export function RunsChart({ days, executions }) {
  const canvas = useRef(null);
  const chart = useRef(null);
  const labels = days.map((d) => d.date);
  const values = days.map((d) => d.started);
  const total = values.reduce((a, b) => a + b, 0);
  const key = JSON.stringify(days);

  useEffect(() => {
    const data = { labels, datasets: [{ label: 'Runs started', data: values, maxBarThickness: 28 }] };
    if (chart.current) {
      chart.current.data = data;
    } else {
      chart.current = new Chart(canvas.current, {
        type: 'bar',
        data,
        options: {
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          plugins: { legend: { display: false } },
          scales: {
            x: { grid: { display: false }, ticks: { autoSkip: true, maxRotation: 0 } },
            y: { beginAtZero: true, ticks: { precision: 0 }, grid: {} },
          },
        },
      });
    }
    paint(chart.current, themeColours(canvas.current));
    chart.current.update();
  }, [key]); // `key` stands for `days`: a new array with the same days redraws nothing

  // The admin's theme switch (and, on "auto", the system's) changes the CSS variables: repaint
  // with the new ones.
  useEffect(() => {
    const repaint = () => {
      if (!chart.current) return;
      paint(chart.current, themeColours(canvas.current));
      chart.current.update();
    };
    const observer = new MutationObserver(repaint);
    observer.observe(document.documentElement, { attributes: true, attributeFilter: ['data-theme'] });
    const scheme = window.matchMedia('(prefers-color-scheme: dark)');
    scheme.addEventListener('change', repaint);
    return () => {
      observer.disconnect();
      scheme.removeEventListener('change', repaint);
      chart.current?.destroy();
      chart.current = null;
    };
  }, []);

  const statuses = STATUS_LABELS.filter(([status]) => executions?.[status] != null);
  return (
    <div className="wf-runs" data-testid="runs-chart">
      <div className="wf-runs-chart">
        <div className="wf-runs-title">Runs started per day</div>
        <div className="wf-runs-box">
          <canvas
            ref={canvas}
            role="img"
            aria-label={`Bar chart of runs started per day: ${total} in all over ${days.length} day${days.length === 1 ? '' : 's'}. The table below lists each day.`}
            data-testid="runs-chart-canvas"
          />
        </div>
        <details className="wf-runs-table">
          <summary>Show as a table</summary>
          <table data-testid="runs-table">
            <thead>
              <tr>
                <th scope="col">Day</th>
                <th scope="col">Runs started</th>
              </tr>
            </thead>
            <tbody>
              {days.map((d) => (
                <tr key={d.date} data-date={d.date}>
                  <td>{d.date}</td>
                  <td>{d.started}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </details>
      </div>
      <table className="wf-runs-statuses" data-testid="runs-statuses">
        <caption>Runs started in the period, by status now</caption>
        <tbody>
          {statuses.map(([status, label]) => (
            <tr key={status} data-status={status}>
              <th scope="row">
                <span className={`wf-status wf-status-${status}`}>{label}</span>
              </th>
              <td>{executions[status]}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
