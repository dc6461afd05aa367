// The stats overlay: a period (and an optional goal event, for A/B splits) chosen above the
// graph; the figures from the canvas's stats endpoint (workflows_app/admin_stats.py) then show on
// every node, by each split branch's port and on the edges, with the runs-per-day chart.
import React, { useEffect, useState } from 'react';
import { loadStats } from './api.js';
import { RunsChart } from './RunsChart.jsx';

const DAY_MS = 24 * 60 * 60 * 1000;
const PERIODS = [
  ['1', 'Last 24 hours'],
  ['7', 'Last 7 days'],
  ['30', 'Last 30 days'],
  ['90', 'Last 90 days'],
  ['custom', 'From – to dates'],
];

const STEP_FIGURES = [
  ['entered', 'entered'],
  ['completed', 'completed'],
  ['skipped', 'skipped'],
  ['failed', 'failed'],
  ['waiting', 'waiting now'],
];
// Send Email: counts, and opens and clicks as a share of the emails sent.
const EMAIL_FIGURES = [
  ['sent', 'sent'],
  ['delivered', 'delivered'],
  ['opened', 'opened', true],
  ['clicked', 'clicked', true],
  ['bounced', 'bounced'],
  ['unsubscribed', 'unsubscribed'],
];

function localDate(when) {
  const d = new Date(when);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export function percent(part, whole) {
  return whole ? `${Math.round((100 * part) / whole)}%` : '–';
}

export function StatsToggle({ on, onToggle }) {
  return (
    <button type="button" className="button wf-stats-toggle" aria-pressed={on} data-testid="stats-toggle"
      title="Show each step's figures for a period" onClick={() => onToggle(!on)}>
      {on ? 'Hide stats' : 'Stats'}
    </button>
  );
}

// The period picker, goal, chart and any error; hands the loaded figures to the canvas through
// `onStats` (null while there are none, and when the panel closes).
export function StatsPanel({ url, hasSplit, onStats }) {
  const [period, setPeriod] = useState('30');
  const [from, setFrom] = useState(() => localDate(Date.now() - 30 * DAY_MS));
  const [to, setTo] = useState(() => localDate(Date.now()));
  const [goalDraft, setGoalDraft] = useState('');
  const [goal, setGoal] = useState('');
  const [reload, setReload] = useState(0);
  const [stats, setStats] = useState(null);
  const [error, setError] = useState(null); // {message, field}
  const [loading, setLoading] = useState(false);

  useEffect(() => {
    const controller = new AbortController();
    const now = Date.now();
    const range =
      period === 'custom'
        ? { from, to }
        : { from: new Date(now - Number(period) * DAY_MS).toISOString(), to: new Date(now).toISOString() };
    setLoading(true);
    loadStats(url, { ...range, goal }, controller.signal).then(
      (body) => {
        if (controller.signal.aborted) return;
        setStats(body);
        setError(null);
        setLoading(false);
        onStats(body);
      },
      (err) => {
        if (controller.signal.aborted) return;
        // The old figures are not for the period asked for: they go, the reason shows.
        setStats(null);
        setError({ message: err.message, field: err.field });
        setLoading(false);
        onStats(null);
      },
    );
    return () => controller.abort();
  }, [url, period, from, to, goal, reload, onStats]);

  useEffect(() => () => onStats(null), [onStats]);

  const commitGoal = () => setGoal(goalDraft.trim());
  const invalid = (field) => (error?.field === field ? { 'aria-invalid': true, 'aria-describedby': 'wf-stats-error' } : {});
  return (
    <section className="wf-stats" aria-label="Statistics" data-testid="stats-panel">
      <div className="wf-stats-controls">
        <label>
          Period{' '}
          <select value={period} onChange={(e) => setPeriod(e.target.value)} data-testid="stats-period">
            {PERIODS.map(([value, label]) => (
              <option key={value} value={value}>{label}</option>
            ))}
          </select>
        </label>
        {period === 'custom' && (
          <>
            <label>
              From <input type="date" value={from} max={to || undefined} onChange={(e) => setFrom(e.target.value)}
                data-testid="stats-from" {...invalid('from')} />
            </label>
            <label>
              to <input type="date" value={to} min={from || undefined} onChange={(e) => setTo(e.target.value)}
                data-testid="stats-to" {...invalid('to')} />
            </label>
          </>
        )}
        {hasSplit && (
          <label title="For A/B splits: the share of each branch's contacts who then had this event">
            Goal event{' '}
            <input type="text" value={goalDraft} placeholder="e.g. order.placed" size={18} data-testid="stats-goal"
              onChange={(e) => setGoalDraft(e.target.value)} onBlur={commitGoal} {...invalid('goal')}
              onKeyDown={(e) => {
                if (e.key === 'Enter') {
                  e.preventDefault();
                  commitGoal();
                }
              }} />
          </label>
        )}
        <button type="button" className="button" onClick={() => setReload((n) => n + 1)} disabled={loading}>
          Refresh
        </button>
        <span className="wf-stats-state" role="status" data-testid="stats-state">
          {loading ? 'Loading the figures…' : stats ? periodText(stats) : ''}
        </span>
      </div>
      {error && (
        <div className="wf-banner wf-banner-error" role="alert" id="wf-stats-error" data-testid="stats-error">
          {error.message}
        </div>
      )}
      {stats && <RunsChart days={stats.started_per_day || []} executions={stats.executions || {}} />}
    </section>
  );
}

function periodText(stats) {
  const show = (when) => (when ? new Date(when).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '…');
  return `Figures from ${show(stats.from)} to ${show(stats.to)}${stats.goal ? `, goal “${stats.goal}”` : ''}.`;
}

function Figure({ name, label, value, of }) {
  const n = value || 0;
  const shown = of === undefined ? n : percent(n, of);
  const title = of === undefined ? `${n} ${label}` : `${n} ${label} of ${of || 0} sent`;
  return (
    <span className={`wf-stat${n ? '' : ' wf-stat-zero'}`} data-stat={name} data-value={n} title={title}>
      <b>{shown}</b> {label}
    </span>
  );
}

function reasonsText(reasons) {
  const entries = Object.entries(reasons || {}).filter(([, n]) => n);
  return entries.map(([reason, n]) => `${reason} ${n}`).join(', ');
}

// A step's figures for the period (`figures` is stats.steps[key]; missing for a step that is
// not saved yet).
export function StepStats({ stepKey, figures }) {
  if (!figures) {
    return <div className="wf-node-stats wf-stats-none" data-testid={`stats-${stepKey}`}>No figures (not saved yet).</div>;
  }
  const reasons = reasonsText(figures.skipped_reasons);
  return (
    <div className="wf-node-stats" data-testid={`stats-${stepKey}`}>
      <div className="wf-stat-group">
        {STEP_FIGURES.map(([name, label]) => (
          <Figure key={name} name={name} label={label} value={figures[name]} />
        ))}
      </div>
      {figures.type === 'send_email' && (
        <div className="wf-stat-group wf-stat-email">
          {EMAIL_FIGURES.map(([name, label, share]) => (
            <Figure key={name} name={name} label={label} value={figures[name]} of={share ? figures.sent || 0 : undefined} />
          ))}
        </div>
      )}
      {reasons && (
        <div className="wf-stat-reasons" data-testid={`skipped-reasons-${stepKey}`}>Skipped: {reasons}</div>
      )}
    </div>
  );
}

// A split's figures per branch, each in a column centred under its own port (the ports sit at
// (i + 1) / (n + 1) of the node's width: half a column of margin either side).
export function BranchStats({ stepKey, ports, branches, goal }) {
  if (!branches || !ports.length) return null;
  return (
    <div className="wf-branch-stats" data-testid={`branch-stats-${stepKey}`}
      style={{ gridTemplateColumns: `0.5fr repeat(${ports.length}, 1fr) 0.5fr` }}>
      {ports.map((port, i) => {
        const b = branches[port.id] || {};
        const others = [
          ['waiting', 'waiting'],
          ['failed', 'failed'],
          ['skipped', 'skipped'],
        ].filter(([name]) => b[name]);
        const share = goal ? (b.goal_share == null ? '–' : `${Math.round(b.goal_share * 100)}%`) : null;
        const whole =
          `Branch ${port.id}: ${b.entered || 0} entered, ${b.completed || 0} completed, ` +
          `${b.skipped || 0} skipped, ${b.failed || 0} failed, ${b.waiting || 0} waiting now` +
          (b.sent ? `; ${b.sent} emails sent, ${percent(b.opened || 0, b.sent)} opened, ${percent(b.clicked || 0, b.sent)} clicked` : '') +
          (goal ? `; ${b.goal_reached || 0} reached the goal (${share})` : '') +
          '.';
        return (
          <div key={port.id} className="wf-branch-stat" style={{ gridColumn: i + 2 }} title={whole}
            data-branch={port.id} data-entered={b.entered || 0} data-completed={b.completed || 0}
            data-goal-reached={b.goal_reached ?? ''} data-goal-share={b.goal_share ?? ''}>
            <span className="wf-visually-hidden">{whole}</span>
            <span aria-hidden="true">
              <b>{b.entered || 0}</b> in
              <br />
              <b>{b.completed || 0}</b> done
              {others.map(([name, label]) => (
                <React.Fragment key={name}>
                  <br />
                  <b>{b[name]}</b> {label}
                </React.Fragment>
              ))}
              {b.sent > 0 && (
                <>
                  <br />
                  <b>{percent(b.opened || 0, b.sent)}</b> opened
                </>
              )}
              {goal && (
                <>
                  <br />
                  goal <b>{share}</b>
                </>
              )}
            </span>
          </div>
        );
      })}
    </div>
  );
}

// How many took an edge in the period, when the figures say so: a split's branch has its own
// count; any other edge that is the only way into its step carries everyone who entered it.
export function edgeCount(edge, stats, edges) {
  if (!stats) return null;
  const branch = edge.sourceHandle || 'next';
  const split = stats.steps?.[edge.source]?.branches;
  if (split) return split[branch]?.entered ?? 0;
  const into = edges.filter((e) => e.target === edge.target).length;
  if (into !== 1) return null;
  return stats.steps?.[edge.target]?.entered ?? null;
}

export function withCount(label, count) {
  if (count == null) return label;
  return label ? `${label} · ${count}` : String(count);
}

// What the trigger shows: the runs started in the period.
export function startedIn(stats) {
  return Object.values(stats.executions || {}).reduce((a, b) => a + b, 0);
}
