// The side panel: the selected step's name and config form, its outputs and its errors.
// The form is the one the step type names (describe()'s `form`), else one generated from its
// config's JSON schema; field lists, enums and labels come from that schema either way.
import React, { useState } from 'react';
import { isSet, portsFor } from './graph.js';
import { ConditionForm } from './ConditionForm.jsx';
import { SplitForm } from './SplitForm.jsx';
import { JsonForm, SchemaForm } from './SchemaForm.jsx';
import { choices, Field, showValue } from './fields.jsx';

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

function unitsOf(schema) {
  if (schema?.properties?.unit?.enum) return schema.properties.unit.enum;
  for (const def of Object.values(schema?.$defs || {})) {
    if (def.properties?.unit?.enum) return def.properties.unit.enum;
  }
  return [];
}

function Duration({ idPrefix, value, units, onChange, disabled, decimals = false }) {
  return (
    <div className="wf-row">
      <input
        id={`${idPrefix}-amount`}
        type="number"
        min={decimals ? '0' : '1'}
        step={decimals ? 'any' : '1'}
        value={value?.amount ?? ''}
        disabled={disabled}
        onChange={(e) => onChange({ ...value, amount: e.target.value === '' ? null : Number(e.target.value) })}
        aria-label="Amount"
      />
      <select
        id={`${idPrefix}-unit`}
        value={value?.unit || ''}
        disabled={disabled}
        onChange={(e) => onChange({ ...value, unit: e.target.value })}
        aria-label="Unit"
      >
        <option value="">unit…</option>
        {units.map((u) => (
          <option key={u} value={u}>{u}</option>
        ))}
      </select>
    </div>
  );
}

// Rows of key = value; values that read as JSON numbers/booleans/null are stored as such.
function parseValue(text) {
  if (/^(-?\d+(\.\d+)?|true|false|null)$/.test(text.trim())) return JSON.parse(text.trim());
  return text;
}
function KeyValueRows({ idPrefix, value, onChange, disabled, keyLabel = 'Key', valueLabel = 'Value', parse = parseValue }) {
  const [rows, setRows] = useState(() => Object.entries(value || {}).map(([k, v]) => [k, showValue(v)]));
  const emit = (next) => {
    setRows(next);
    const out = {};
    for (const [k, v] of next) if (k.trim()) out[k.trim()] = parse(v);
    onChange(out);
  };
  return (
    <div className="wf-kv" id={idPrefix}>
      {rows.map(([k, v], i) => (
        <div className="wf-row" key={i}>
          <input aria-label={keyLabel} placeholder={keyLabel} value={k} disabled={disabled}
            onChange={(e) => emit(rows.map((r, j) => (j === i ? [e.target.value, r[1]] : r)))} />
          <input aria-label={valueLabel} placeholder={valueLabel} value={v} disabled={disabled}
            onChange={(e) => emit(rows.map((r, j) => (j === i ? [r[0], e.target.value] : r)))} />
          <button type="button" className="wf-icon" title="Remove row" aria-label="Remove row" disabled={disabled}
            onClick={() => emit(rows.filter((_, j) => j !== i))}>×</button>
        </div>
      ))}
      <button type="button" className="wf-add-row" disabled={disabled} onClick={() => setRows([...rows, ['', '']])}>
        + Add {keyLabel.toLowerCase()}
      </button>
    </div>
  );
}

function ListRows({ idPrefix, value, onChange, disabled, label }) {
  const [rows, setRows] = useState(() => [...(value || [])]);
  const emit = (next) => {
    setRows(next);
    onChange(next.map((r) => r.trim()).filter(Boolean));
  };
  return (
    <div className="wf-kv" id={idPrefix}>
      {rows.map((v, i) => (
        <div className="wf-row" key={i}>
          <input aria-label={label} placeholder={label} value={v} disabled={disabled}
            onChange={(e) => emit(rows.map((r, j) => (j === i ? e.target.value : r)))} />
          <button type="button" className="wf-icon" aria-label="Remove row" disabled={disabled}
            onClick={() => emit(rows.filter((_, j) => j !== i))}>×</button>
        </div>
      ))}
      <button type="button" className="wf-add-row" disabled={disabled} onClick={() => setRows([...rows, ''])}>
        + Add {label.toLowerCase()}
      </button>
    </div>
  );
}

function SendEmailForm({ config, set, disabled, templates, templateAddUrl, err, schema }) {
  const chosen = templates.find((t) => t.name === config.template);
  const recipient = config.recipient || { type: 'CONTACT' };
  const types = choices(schema, 'type', ['CONTACT', 'CUSTOM']);
  const labels = { CONTACT: 'The contact', CUSTOM: 'A fixed address' };
  return (
    <>
    <Field label="Template" id="cfg-template" error={err('template')}>
      <select id="cfg-template" value={config.template || ''} disabled={disabled}
        onChange={(e) => set({ ...config, template: e.target.value })}>
        <option value="">Choose a template…</option>
        {templates.map((t) => (
          <option key={t.name} value={t.name}>{t.name} ({t.type})</option>
        ))}
        {config.template && !chosen && <option value={config.template}>{config.template} (missing)</option>}
      </select>
      <div className="wf-links">
        {chosen && <a href={chosen.edit_url} target="_blank" rel="noopener" id="cfg-template-edit">Edit “{chosen.name}” ↗</a>}
        <a href={templateAddUrl} target="_blank" rel="noopener">New template ↗</a>
      </div>
    </Field>
    <Field label="Send to" id="cfg-recipient-CONTACT" error={err('recipient') || err('recipient.type')}>
      {types.map((type) => (
        <label className="wf-check" key={type}>
          <input type="radio" name="cfg-recipient" id={`cfg-recipient-${type}`} value={type} disabled={disabled}
            checked={recipient.type === type}
            onChange={() => set({ ...config, recipient: type === 'CUSTOM' ? { type, customEmail: recipient.customEmail || '' } : { type } })} />
          {labels[type] || type}
        </label>
      ))}
    </Field>
    {recipient.type === 'CUSTOM' && (
      <Field label="Email address" id="cfg-custom-email" error={err('recipient.customEmail')}
        hint="Sent to this address whatever the contact's subscription; recorded against the contact.">
        <input id="cfg-custom-email" type="email" value={recipient.customEmail || ''} disabled={disabled} placeholder="team@example.com"
          onChange={(e) => set({ ...config, recipient: { type: 'CUSTOM', customEmail: e.target.value } })} />
      </Field>
    )}
    </>
  );
}

function DelayForm({ config, set, disabled, schema, err }) {
  return (
    <Field label="Wait for" id="cfg-delay-amount" error={err('amount') || err('unit')}>
      <Duration idPrefix="cfg-delay" value={config} units={unitsOf(schema)} disabled={disabled} decimals
        onChange={(v) => set({ ...config, ...v })} />
    </Field>
  );
}

function WaitForEventForm({ config, set, disabled, schema, err }) {
  // The "timeout" output's rule (graph.isSet): Plunk's `timeout: 0` is no timeout.
  const hasTimeout = isSet(config.timeout);
  return (
    <>
      <Field label="Event" id="cfg-event" error={err('event')} hint="The tracked event name that continues the run on the “event” output.">
        <input id="cfg-event" value={config.event || ''} disabled={disabled}
          onChange={(e) => set({ ...config, event: e.target.value })} />
      </Field>
      <Field label="Timeout" id="cfg-timeout-on" error={err('timeout') || err('timeout.amount') || err('timeout.unit')}
        hint="With a timeout the step gets a “timeout” output, taken if the event does not come in time.">
        <label className="wf-check">
          <input id="cfg-timeout-on" type="checkbox" checked={hasTimeout} disabled={disabled}
            onChange={(e) => set({ ...config, timeout: e.target.checked ? { amount: 1, unit: 'days' } : null })} />
          Give up after a while
        </label>
        {hasTimeout && (
          <Duration idPrefix="cfg-timeout" value={config.timeout} units={unitsOf(schema)} disabled={disabled} decimals
            onChange={(v) => set({ ...config, timeout: v })} />
        )}
      </Field>
    </>
  );
}

function WebhookForm({ config, set, disabled, err, schema }) {
  const [bodyText, setBodyText] = useState(config.body == null ? '' : JSON.stringify(config.body, null, 2));
  const [bodyError, setBodyError] = useState('');
  const methods = choices(schema, 'method', METHODS);
  const method = config.method || 'POST';
  return (
    <>
      <Field label="Method" id="cfg-method" error={err('method')}>
        <select id="cfg-method" value={method} disabled={disabled} onChange={(e) => set({ ...config, method: e.target.value })}>
          {methods.map((m) => <option key={m} value={m}>{m}</option>)}
        </select>
      </Field>
      <Field label="URL" id="cfg-url" error={err('url')} hint="Liquid works here too, e.g. https://example.com/users/{{ id }}.">
        <input id="cfg-url" type="url" value={config.url || ''} disabled={disabled} placeholder="https://…"
          onChange={(e) => set({ ...config, url: e.target.value })} />
      </Field>
      <Field label="Headers" id="cfg-headers" error={err('headers')}>
        <KeyValueRows idPrefix="cfg-headers" value={config.headers} disabled={disabled} keyLabel="Header" parse={(v) => v}
          onChange={(headers) => set({ ...config, headers })} />
      </Field>
      <Field label="Body (JSON)" id="cfg-body" error={bodyError || err('body')}
        hint={method === 'GET'
          ? 'A GET request sends no body.'
          : 'Liquid works in string values; a value that is exactly {{ x }} keeps x’s type. Empty: the contact, event, workflow and execution.'}>
        <textarea id="cfg-body" rows="5" value={bodyText} disabled={disabled}
          onChange={(e) => {
            setBodyText(e.target.value);
            if (!e.target.value.trim()) {
              setBodyError('');
              const { body, ...rest } = config;
              set(rest);
              return;
            }
            try {
              set({ ...config, body: JSON.parse(e.target.value) });
              setBodyError('');
            } catch {
              setBodyError('Not valid JSON yet; the last valid body is kept.');
            }
          }} />
      </Field>
      <Field label="Timeout (seconds)" id="cfg-timeout-seconds" error={err('timeout_seconds')}>
        <input id="cfg-timeout-seconds" type="number" min="1" max="30" value={config.timeout_seconds ?? 10} disabled={disabled}
          onChange={(e) => set({ ...config, timeout_seconds: Number(e.target.value) })} />
      </Field>
    </>
  );
}

function UpdateContactForm({ config, set, disabled, err }) {
  const subscribed = config.subscribed == null ? '' : String(config.subscribed);
  return (
    <>
      <Field label="Set" id="cfg-set" error={err('set') || err('')} hint="Numbers and true/false are stored as such.">
        <KeyValueRows idPrefix="cfg-set" value={config.set} disabled={disabled}
          onChange={(values) => set({ ...config, set: values })} />
      </Field>
      <Field label="Remove" id="cfg-unset" error={err('unset')}>
        <ListRows idPrefix="cfg-unset" value={config.unset} disabled={disabled} label="Key to remove"
          onChange={(unset) => set({ ...config, unset })} />
      </Field>
      <Field label="Subscription" id="cfg-subscribed" error={err('subscribed')}>
        <select id="cfg-subscribed" value={subscribed} disabled={disabled}
          onChange={(e) => set({ ...config, subscribed: e.target.value === '' ? null : e.target.value === 'true' })}>
          <option value="">Leave unchanged</option>
          <option value="true">Subscribe</option>
          <option value="false">Unsubscribe</option>
        </select>
      </Field>
    </>
  );
}

function ExitForm({ config, set, disabled, err, schema }) {
  // No reason in the config means the type's default (Plunk's "exit_step"); emptied, none.
  const fallback = schema?.properties?.reason?.default ?? '';
  return (
    <Field label="Reason" id="cfg-reason" error={err('reason')} hint="Recorded on the execution as its exit reason; empty: none.">
      <input id="cfg-reason" value={config.reason ?? fallback} disabled={disabled}
        onChange={(e) => set({ ...config, reason: e.target.value })} />
    </Field>
  );
}

// The hand-written forms, by the name a step type gives as its `form` (StepType.form); a type
// that names none gets SchemaForm, generated from its config's JSON schema.
const FORMS = {
  send_email: SendEmailForm,
  delay: DelayForm,
  wait_for_event: WaitForEventForm,
  condition: ConditionForm,
  webhook: WebhookForm,
  update_contact: UpdateContactForm,
  exit: ExitForm,
  split: SplitForm,
};

function Outputs({ node, kind, nodes, edges, onConnectPort, readOnly }) {
  const ports = portsFor(kind, node.data.config);
  if (!ports.length) return <p className="help">{kind?.label || 'This step'} ends the run: it has no outputs.</p>;
  return (
    <div className="wf-outputs">
      {ports.map(({ id: branch, label }) => {
        const edge = edges.find((e) => e.source === node.id && (e.sourceHandle || 'next') === branch);
        return (
          <div className="wf-row" key={branch}>
            <label htmlFor={`out-${branch}`} className="wf-port-name" title={branch}>{label}</label>
            <select id={`out-${branch}`} value={edge ? edge.target : ''} disabled={readOnly}
              onChange={(e) => onConnectPort(node.id, branch, e.target.value)}>
              <option value="">— ends the run —</option>
              {nodes.filter((n) => n.type === 'step' && n.id !== node.id).map((n) => (
                <option key={n.id} value={n.id}>{n.data.name || n.id}</option>
              ))}
            </select>
          </div>
        );
      })}
    </div>
  );
}

export function ConfigPanel({ node, kind, errors, readOnly, nameReadOnly, templates, templateAddUrl, fields, nodes, edges, onChange, onDelete, onConnectPort }) {
  if (!node) return null;
  const config = node.data.config || {};
  const err = (field) => {
    const hit = errors.find((e) => e.field === (field ? `config.${field}` : 'config'));
    return hit ? hit.message : '';
  };
  // The type's own form if it names one the canvas has; else one generated from its schema;
  // a step of a type the server no longer describes: its config as JSON.
  const Form = FORMS[kind?.form] || (kind?.config_schema ? SchemaForm : JsonForm);
  const other = errors.filter((e) => !e.field || !e.field.startsWith('config'));
  return (
    <aside className="wf-panel" aria-label="Step settings" data-testid="config-panel" key={node.id}>
      <div className="wf-panel-head">
        <strong>{kind?.label || node.data.stepType}</strong>
        <code className="wf-key" title="The step's key: stable, history refers to it">{node.id}</code>
      </div>
      {kind?.description && <p className="help">{kind.description}</p>}
      {other.length > 0 && (
        <ul className="errorlist" data-testid="panel-errors">
          {other.map((e, i) => <li key={i}>{e.message}</li>)}
        </ul>
      )}
      {Object.keys(config).length === 0 && err('') && <ul className="errorlist"><li>{err('')}</li></ul>}
      <Field label="Name" id="cfg-name">
        <input id="cfg-name" value={node.data.name || ''} disabled={nameReadOnly} placeholder={node.id}
          onChange={(e) => onChange({ name: e.target.value })} />
      </Field>
      <Form config={config} set={(c, renamedPorts) => onChange({ config: c, renamedPorts })} disabled={readOnly} schema={kind?.config_schema}
        err={err} templates={templates} templateAddUrl={templateAddUrl} fields={fields} />
      <h3 className="wf-panel-sub">Outputs</h3>
      <Outputs node={node} kind={kind} nodes={nodes} edges={edges} onConnectPort={onConnectPort} readOnly={readOnly} />
      {!readOnly && (
        <button type="button" className="wf-delete" onClick={onDelete}>Delete step</button>
      )}
    </aside>
  );
}
