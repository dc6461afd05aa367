// The Test panel: a dry run of the saved workflow for one contact (an existing one by email, or
// made-up data), with events arriving at chosen virtual times. The server runs the real step
// code with every side effect captured (nothing is sent, called or stored); the panel shows the
// path (also highlighted on the graph), each email in a sandboxed frame, each webhook request
// and the final state.
import React, { useEffect, useState } from 'react';
import { useReactFlow } from '@xyflow/react';
import { simulate } from './api.js';
import { Field } from './fields.jsx';

const UNITS = [
  ['seconds', 1],
  ['minutes', 60],
  ['hours', 3600],
  ['days', 86400],
];
const SAMPLE_DATA = '{\n  "firstName": "Ann",\n  "plan": "pro"\n}';

// "+2 days 3 h": a virtual time, the two largest units that are not zero.
export function virtualTime(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s === 0) return 'start';
  const parts = [
    [Math.floor(s / 86400), (n) => `${n} day${n === 1 ? '' : 's'}`],
    [Math.floor((s % 86400) / 3600), (n) => `${n} h`],
    [Math.floor((s % 3600) / 60), (n) => `${n} min`],
    [s % 60, (n) => `${n} s`],
  ];
  // (The exact moment is the entry's tooltip.)
  return `+${parts
    .filter(([n]) => n > 0)
    .slice(0, 2)
    .map(([n, show]) => show(n))
    .join(' ')}`;
}

// What the graph highlights: the visited steps (in order) and the edges taken between them.
export function traceOf(path) {
  const steps = (path || []).map((p) => p.step).filter((s) => s && s !== 'trigger');
  const order = new Map(steps.map((s, i) => [s, i + 1]));
  const failed = new Set((path || []).filter((p) => p.detail?.error).map((p) => p.step));
  const edges = new Map(); // edge id (source:branch) -> the step it led to
  if (steps.length) edges.set('trigger:next', steps[0]);
  (path || []).forEach((p, i) => {
    const next = path[i + 1];
    if (p.branch && next) edges.set(`${p.step}:${p.branch}`, next.step);
  });
  return { order, edges, failed };
}

export function traceEdgeClass(trace, edge) {
  if (!trace) return undefined;
  return trace.edges.get(edge.id) === edge.target ? 'wf-edge-taken' : 'wf-edge-untaken';
}

function parseJson(text, { optional = false } = {}) {
  if (!text.trim()) return optional ? { value: undefined } : { error: 'Enter a JSON object, e.g. {"plan": "pro"}.' };
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return { error: 'This must be a JSON object ({…}).' };
    return { value };
  } catch (err) {
    return { error: `Not valid JSON: ${err.message}` };
  }
}

// The request from the form, or the errors per field (the server's field names).
function buildRequest(form) {
  const errors = {};
  const request = { events: [] };
  if (form.mode === 'email') {
    if (!form.email.trim()) errors['contact.email'] = 'Enter the email of an existing contact.';
    request.contact = { email: form.email.trim() };
  } else {
    const data = parseJson(form.contactData);
    if (data.error) errors['contact.data'] = data.error;
    request.contact = { data: data.value, subscribed: form.subscribed };
    if (form.sampleEmail.trim()) request.contact.email = form.sampleEmail.trim();
  }
  const trigger = parseJson(form.triggerData, { optional: true });
  if (trigger.error) errors['trigger.data'] = trigger.error;
  request.trigger = { data: trigger.value || {} };
  form.events.forEach((e, i) => {
    if (!e.name.trim()) errors[`events.${i}.name`] = 'Enter the event name.';
    const amount = Number(e.amount);
    if (e.amount === '' || !Number.isFinite(amount) || amount < 0) errors[`events.${i}.after`] = 'A time of 0 or more.';
    const data = parseJson(e.data, { optional: true });
    if (data.error) errors[`events.${i}.data`] = data.error;
    const factor = UNITS.find(([u]) => u === e.unit)?.[1] || 1;
    request.events.push({ name: e.name.trim(), after: amount * factor, data: data.value || {} });
  });
  return { request, errors };
}

// The server's 400 (and 403): {message, fields: {field: message}}; `errors` as a list of
// {field, message} is read too, as the canvas save sends it.
function serverErrors(body) {
  const raw = body?.fields || body?.errors;
  if (Array.isArray(raw)) return Object.fromEntries(raw.filter((e) => e && e.field).map((e) => [e.field, e.message]));
  return raw && typeof raw === 'object' ? { ...raw } : {};
}

function Pretty({ value, testid }) {
  return <pre className="wf-test-json" data-testid={testid}>{JSON.stringify(value, null, 2)}</pre>;
}

const show = (v) => (v === undefined ? '—' : JSON.stringify(v));

// What a visit did, in words: a Condition's field, what it held and each test's result; a
// Split's weights; a wait's event or wake-up; the email, webhook or contact change; an error.
// Keys it does not know are listed as they are.
function Detail({ type, detail }) {
  if (!detail || typeof detail !== 'object') return null;
  const lines = [];
  const known = new Set(['error', 'skipped', 'reason', 'horizon', 'output']);
  if (type === 'condition') {
    ['field', 'operator', 'expected', 'actual', 'present', 'result', 'branch', 'branches'].forEach((k) => known.add(k));
    const actual = detail.present === false ? 'missing' : show(detail.actual);
    lines.push(['value', `${detail.field} is ${actual}`]);
    if (detail.operator) lines.push(['test', `${detail.operator} ${show(detail.expected)} → ${detail.result ? 'true' : 'false'}`]);
    for (const b of detail.branches || []) {
      lines.push([b.name || b.id, `${b.operator} ${b.operator?.endsWith('xists') ? '' : show(b.expected)} → ${b.result ? 'true' : 'false'}`]);
    }
  } else if (type === 'split') {
    ['weights', 'bucket', 'branch'].forEach((k) => known.add(k));
    const weights = Object.entries(detail.weights || {});
    const total = weights.reduce((sum, [, w]) => sum + w, 0);
    lines.push(['weights', weights.map(([id, w]) => `${id} ${Math.round((w * 1000) / total) / 10}%`).join(' · ')]);
  }
  if ('wake_after' in detail) {
    known.add('wake_after').add('wake_at');
    lines.push(['wakes', virtualTime(detail.wake_after)]);
  }
  if ('event' in detail && typeof detail.event === 'string' && 'timeout_at' in detail) {
    ['event', 'timeout_at', 'received', 'resumed_at'].forEach((k) => known.add(k));
    lines.push(['waits for', detail.event]);
    if (detail.received) {
      const { name, after, data } = detail.received;
      const extra = data && Object.keys(data).length ? ` ${show(data)}` : '';
      lines.push(['received', `${name} at ${virtualTime(after)}${extra}`]);
    }
    else if (detail.timeout_at && !detail.horizon) lines.push(['timed out', 'no such event in time']);
  }
  if ('subject' in detail) {
    ['email', 'to', 'subject'].forEach((k) => known.add(k));
    lines.push(['email', `to ${detail.to}: “${detail.subject}” (shown below)`]);
  }
  if ('url' in detail) {
    ['webhook', 'method', 'url'].forEach((k) => known.add(k));
    lines.push(['request', `${detail.method} ${detail.url} (shown below)`]);
  }
  if ('set' in detail || 'unset' in detail) {
    ['set', 'unset', 'subscribed', 'data', 'event'].forEach((k) => known.add(k));
    if (detail.set && Object.keys(detail.set).length) lines.push(['sets', show(detail.set)]);
    if (detail.unset?.length) lines.push(['removes', detail.unset.join(', ')]);
    if (detail.subscribed != null) lines.push(['subscribed', String(detail.subscribed)]);
  }
  if (detail.skipped) lines.push(['skipped', detail.reason || 'yes']);
  else if (detail.reason) lines.push(['reason', detail.reason]);
  if (detail.output !== undefined) lines.push(['output', show(detail.output)]);
  for (const [k, v] of Object.entries(detail)) if (!known.has(k)) lines.push([k, typeof v === 'string' ? v : show(v)]);
  return (
    <>
      {lines.length > 0 && (
        <dl className="wf-test-detail">
          {lines.map(([k, v], i) => (
            <React.Fragment key={i}>
              <dt>{k}</dt>
              <dd>{v}</dd>
            </React.Fragment>
          ))}
        </dl>
      )}
      {detail.horizon && <div className="help">{detail.horizon}</div>}
      {detail.error && <div className="wf-field-message">{detail.error}</div>}
    </>
  );
}

function Timeline({ path, palette }) {
  if (!path.length) return <p className="help">No step ran: the trigger leads nowhere.</p>;
  return (
    <ol className="wf-test-timeline" data-testid="test-timeline">
      {path.map((p, i) => (
        <li key={i} data-step={p.step}>
          <div className="wf-row">
            <span className="wf-test-at" title={p.at_time || ''}>{virtualTime(p.at)}</span>
            <strong>{p.name || p.step}</strong>
            <span className="wf-key">{palette[p.type]?.label || p.type}</span>
          </div>
          {p.branch && p.branch !== 'next' && <div className="wf-test-branch">→ {p.branch}</div>}
          <Detail type={p.type} detail={p.detail} />
        </li>
      ))}
    </ol>
  );
}

function Email({ email, index }) {
  return (
    <div className="wf-test-email" data-testid={`test-email-${index}`}>
      <div><span className="wf-key">To</span> {email.to}</div>
      {email.from && <div><span className="wf-key">From</span> {email.from}</div>}
      <div><span className="wf-key">Subject</span> <strong>{email.subject}</strong></div>
      <div className="wf-key">from step {email.step}</div>
      {email.html ? (
        // sandbox="" : no scripts, no same-origin, no forms; the email's HTML never touches
        // this page.
        <iframe className="wf-test-frame" sandbox="" srcDoc={email.html} title={`Email: ${email.subject}`}
          data-testid="test-email-frame" />
      ) : null}
      {email.text && (
        <details open={!email.html}>
          <summary>Text version</summary>
          <pre className="wf-test-json">{email.text}</pre>
        </details>
      )}
    </div>
  );
}

function Webhook({ hook, index }) {
  return (
    <div className="wf-test-webhook" data-testid={`test-webhook-${index}`}>
      <div><code>{hook.method} {hook.url}</code> <span className="wf-key">from step {hook.step}</span></div>
      {hook.headers && Object.keys(hook.headers).length > 0 && <Pretty value={hook.headers} />}
      {hook.body !== undefined && hook.body !== null && (
        typeof hook.body === 'string' ? <pre className="wf-test-json">{hook.body}</pre> : <Pretty value={hook.body} />
      )}
    </div>
  );
}

function Results({ result, palette }) {
  const emails = result.emails || [];
  const webhooks = result.webhooks || [];
  return (
    <div className="wf-test-results" data-testid="test-results">
      <div className={`wf-test-status wf-test-status-${String(result.status).toLowerCase()}`} data-testid="test-status">
        <strong>{result.status}</strong>
        {result.exit_reason && <> · {result.exit_reason}</>}
        {result.error && <div className="wf-field-message">{result.error}</div>}
        {result.horizon && <div className="help">{result.horizon}</div>}
      </div>
      <h3 className="wf-panel-sub">Path</h3>
      <Timeline path={result.path || []} palette={palette} />
      <h3 className="wf-panel-sub">Emails ({emails.length})</h3>
      {emails.length ? emails.map((e, i) => <Email email={e} index={i} key={i} />) : <p className="help">None would be sent.</p>}
      <h3 className="wf-panel-sub">Webhooks ({webhooks.length})</h3>
      {webhooks.length ? webhooks.map((h, i) => <Webhook hook={h} index={i} key={i} />) : <p className="help">None would be called.</p>}
      {result.context !== undefined && (
        <details>
          <summary>Final context</summary>
          <Pretty value={result.context} testid="test-context" />
        </details>
      )}
      {result.contact !== undefined && (
        <details>
          <summary>Contact at the end</summary>
          <Pretty value={result.contact} testid="test-contact" />
        </details>
      )}
    </div>
  );
}

export function TestPanel({ url, csrfToken, dirty, palette, onTrace, onClose }) {
  const [form, setForm] = useState({
    mode: 'email',
    email: '',
    contactData: SAMPLE_DATA,
    sampleEmail: '',
    subscribed: true,
    triggerData: '',
    events: [],
  });
  const [errors, setErrors] = useState({});
  const [message, setMessage] = useState('');
  const [result, setResult] = useState(null);
  const [running, setRunning] = useState(false);
  const flow = useReactFlow();
  // The panel takes room from the graph (and gives it back): keep the whole graph in view.
  useEffect(() => {
    const refit = () => setTimeout(() => flow.fitView({ padding: 0.15, duration: 150, maxZoom: 1 }), 60);
    const timer = refit();
    return () => {
      clearTimeout(timer);
      refit();
    };
  }, [flow]);
  const update = (patch) => setForm((f) => ({ ...f, ...patch }));
  const setEvent = (i, patch) => update({ events: form.events.map((e, j) => (j === i ? { ...e, ...patch } : e)) });
  const err = (field) => errors[field] || '';

  const run = async () => {
    const { request, errors: local } = buildRequest(form);
    setErrors(local);
    setMessage('');
    if (Object.keys(local).length) {
      setMessage('Fix the fields marked in red.');
      return;
    }
    setRunning(true);
    try {
      const { status, body } = await simulate(url, csrfToken, request);
      if (status === 200 && Array.isArray(body.path)) {
        setResult(body);
        onTrace(traceOf(body.path));
      } else {
        const fields = serverErrors(body);
        setErrors(fields);
        setMessage(body.message || `The test did not run (HTTP ${status}).`);
        setResult(null);
        onTrace(null);
      }
    } catch (e) {
      setMessage(`The test did not run: ${e.message}`);
    } finally {
      setRunning(false);
    }
  };
  // Server errors on fields the form has no input for are listed with the message.
  const shown = new Set(['contact.email', 'contact.data', 'contact.subscribed', 'trigger.data', 'contact', 'trigger', 'events']);
  form.events.forEach((_, i) => ['name', 'after', 'data', ''].forEach((f) => shown.add(f ? `events.${i}.${f}` : `events.${i}`)));
  const other = Object.entries(errors).filter(([k]) => !shown.has(k));

  return (
    <aside className="wf-panel wf-test-panel" aria-label="Test this workflow" data-testid="test-panel">
      <div className="wf-panel-head">
        <strong>Test run</strong>
        <button type="button" className="wf-icon" aria-label="Close the test panel" title="Close" onClick={onClose}>×</button>
      </div>
      <p className="help">A dry run in virtual time: delays pass at once, events arrive at their times. Nothing is sent, called or stored.</p>
      {dirty && (
        <div className="wf-banner" role="status" data-testid="test-unsaved">
          The graph has unsaved changes: the test runs the saved version.
        </div>
      )}
      <Field label="Contact" id="test-mode-email" error={err('contact')}>
        <label className="wf-check">
          <input type="radio" name="test-mode" id="test-mode-email" checked={form.mode === 'email'}
            onChange={() => update({ mode: 'email' })} />
          An existing contact
        </label>
        <label className="wf-check">
          <input type="radio" name="test-mode" id="test-mode-data" checked={form.mode === 'data'}
            onChange={() => update({ mode: 'data' })} />
          Sample data
        </label>
      </Field>
      {form.mode === 'email' ? (
        <Field label="Email" id="test-email" error={err('contact.email')}>
          <input id="test-email" type="email" value={form.email} placeholder="ann@example.com"
            onChange={(e) => update({ email: e.target.value })} />
        </Field>
      ) : (
        <>
          <Field label="Contact data (JSON)" id="test-contact-data" error={err('contact.data')}
            hint="A made-up contact's data, as /v1/track would store it.">
            <textarea id="test-contact-data" rows="5" value={form.contactData}
              onChange={(e) => update({ contactData: e.target.value })} />
          </Field>
          <Field label="Its email (optional)" id="test-sample-email" error={err('contact.email') || err('contact.subscribed')}>
            <input id="test-sample-email" type="email" value={form.sampleEmail} placeholder="someone@example.com"
              onChange={(e) => update({ sampleEmail: e.target.value })} />
            <label className="wf-check">
              <input type="checkbox" id="test-subscribed" checked={form.subscribed}
                onChange={(e) => update({ subscribed: e.target.checked })} />
              Subscribed to marketing email
            </label>
          </Field>
        </>
      )}
      <Field label="Trigger event data (JSON, optional)" id="test-trigger-data" error={err('trigger.data') || err('trigger')}
        hint="What event.* holds when the run starts.">
        <textarea id="test-trigger-data" rows="3" value={form.triggerData} placeholder='{"total": 42}'
          onChange={(e) => update({ triggerData: e.target.value })} />
      </Field>
      <Field label="Events" id="test-add-event" error={err('events')}>
        {form.events.map((e, i) => {
          const rowErrors = ['name', 'after', 'data', ''].map((f) => err(f ? `events.${i}.${f}` : `events.${i}`)).filter(Boolean);
          return (
            <fieldset className={`wf-branch${rowErrors.length ? ' wf-field-error' : ''}`} key={i} data-testid={`test-event-${i}`}>
              <legend>Event {i + 1}</legend>
              <div className="wf-row">
                <input id={`test-event-${i}-name`} aria-label="Event name" placeholder="user.activated" value={e.name}
                  onChange={(ev) => setEvent(i, { name: ev.target.value })} />
                <button type="button" className="wf-icon" aria-label="Remove event" title="Remove event"
                  onClick={() => update({ events: form.events.filter((_, j) => j !== i) })}>×</button>
              </div>
              <div className="wf-row">
                <span>after</span>
                <input id={`test-event-${i}-after`} type="number" min="0" step="any" aria-label="After" value={e.amount}
                  onChange={(ev) => setEvent(i, { amount: ev.target.value })} />
                <select id={`test-event-${i}-unit`} aria-label="Unit" value={e.unit} onChange={(ev) => setEvent(i, { unit: ev.target.value })}>
                  {UNITS.map(([u]) => <option key={u} value={u}>{u}</option>)}
                </select>
              </div>
              <textarea id={`test-event-${i}-data`} rows="2" aria-label="Event data (JSON)" placeholder='Data (JSON), e.g. {"plan": "pro"}'
                value={e.data} onChange={(ev) => setEvent(i, { data: ev.target.value })} />
              {rowErrors.map((m) => <div className="wf-field-message" key={m}>{m}</div>)}
            </fieldset>
          );
        })}
        <button type="button" className="wf-add-row" id="test-add-event"
          onClick={() => update({ events: [...form.events, { name: '', amount: '1', unit: 'days', data: '' }] })}>
          + Add event
        </button>
      </Field>
      <button type="button" className="button default wf-test-run" id="test-run" onClick={run} disabled={running}>
        {running ? 'Running…' : 'Run test'}
      </button>
      {message && (
        <div className="wf-banner wf-banner-error" role="alert" data-testid="test-error">
          {message}
          {other.length > 0 && (
            <ul>{other.map(([k, m]) => <li key={k}>{k}: {m}</li>)}</ul>
          )}
        </div>
      )}
      {result && <Results result={result} palette={palette} />}
    </aside>
  );
}
