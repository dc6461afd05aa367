// The Condition form: yes / no, or several named branches (a port each, plus `default`).
// Operators come from the schema, else Plunk's canonical list.
import React, { useState } from 'react';
import { slugId } from './graph.js';
import { choices, Field } from './fields.jsx';

const OPERATORS = [
  'equals',
  'notEquals',
  'contains',
  'notContains',
  'greaterThan',
  'lessThan',
  'greaterThanOrEqual',
  'lessThanOrEqual',
  'exists',
  'notExists',
];
const OPERATOR_LABELS = {
  equals: 'equals',
  notEquals: 'does not equal',
  contains: 'contains',
  notContains: 'does not contain',
  greaterThan: 'is greater than',
  lessThan: 'is less than',
  greaterThanOrEqual: 'is at least',
  lessThanOrEqual: 'is at most',
  exists: 'exists',
  notExists: 'does not exist',
};
const NO_VALUE = ['exists', 'notExists', 'not_exists'];
const MAX_BRANCHES = 20;
const operatorLabel = (op) => OPERATOR_LABELS[op] || op.replace(/_/g, ' ');

function OperatorSelect({ id, value, operators, disabled, onChange }) {
  return (
    <select id={id} value={value || ''} disabled={disabled} onChange={(e) => onChange(e.target.value)} aria-label="Operator">
      <option value="">Choose…</option>
      {operators.map((op) => <option key={op} value={op}>{operatorLabel(op)}</option>)}
      {value && !operators.includes(value) && <option value={value}>{operatorLabel(value)}</option>}
    </select>
  );
}

// A Condition's value with its JSON type: `equals` is strict (5 is not "5", true is not
// "true"), so the form says which one is meant. Text by default.
const typeOf = (value) => (typeof value === 'number' ? 'number' : typeof value === 'boolean' ? 'boolean' : 'text');
const NUMBER = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;

function convert(value, kind) {
  const text = value == null ? '' : String(value);
  if (kind === 'number') return NUMBER.test(text.trim()) ? Number(text.trim()) : text;
  if (kind === 'boolean') return text.trim().toLowerCase() === 'true';
  return text;
}

function TypedValue({ id, value, disabled, onChange }) {
  const [kind, setKind] = useState(() => typeOf(value));
  return (
    <>
      {kind === 'boolean' ? (
        <select id={id} aria-label="Value" value={String(value === true)} disabled={disabled}
          onChange={(e) => onChange(e.target.value === 'true')}>
          <option value="true">true</option>
          <option value="false">false</option>
        </select>
      ) : (
        <input id={id} aria-label="Value" placeholder="Value" disabled={disabled}
          inputMode={kind === 'number' ? 'decimal' : undefined}
          value={value == null ? '' : typeof value === 'string' ? value : String(value)}
          onChange={(e) => onChange(convert(e.target.value, kind))} />
      )}
      <select id={`${id}-type`} className="wf-value-type" aria-label="Value type" value={kind} disabled={disabled}
        title="equals compares types too: the number 5 is not the text “5”"
        onChange={(e) => {
          setKind(e.target.value);
          onChange(convert(value, e.target.value));
        }}>
        <option value="text">text</option>
        <option value="number">number</option>
        <option value="boolean">true/false</option>
      </select>
    </>
  );
}

function withOperator(item, operator) {
  const next = { ...item, operator };
  if (NO_VALUE.includes(operator)) delete next.value;
  else if (next.value === undefined) next.value = '';
  return next;
}

// The branches of a multi-branch Condition: one row each (name, operator, value), first
// match wins, else `default`. A branch's id (its port, what transitions name) follows its
// name, unique; renaming it keeps its connection.
function BranchList({ config, set, disabled, operators, err }) {
  const branches = Array.isArray(config.branches) ? config.branches : [];
  const reserved = ['default', 'next'];
  const emit = (next, renamedPorts) => set({ ...config, branches: next }, renamedPorts);
  const idsBut = (i) => [...reserved, ...branches.filter((_, j) => j !== i).map((b) => b.id)];
  const rename = (i, name) => {
    const id = slugId(name, idsBut(i));
    const old = branches[i].id;
    emit(
      branches.map((b, j) => (j === i ? { ...b, name, id } : b)),
      old && old !== id ? { [old]: id } : undefined,
    );
  };
  const move = (i, by) => {
    const next = [...branches];
    [next[i], next[i + by]] = [next[i + by], next[i]];
    emit(next);
  };
  const add = () => {
    const taken = [...reserved, ...branches.map((b) => b.id)];
    let n = branches.length + 1;
    while (taken.includes(slugId(`Branch ${n}`, []))) n += 1;
    const name = `Branch ${n}`;
    emit([...branches, { id: slugId(name, taken), name, operator: operators[0] || 'equals', value: '' }]);
  };
  return (
    <div className="wf-branches" id="cfg-branches" data-testid="branch-list">
      {branches.map((b, i) => {
        const rowErr = (f) => err(`branches.${i}.${f}`);
        return (
          <fieldset className="wf-branch" key={i} data-testid={`branch-${i}`}>
            <legend>
              Branch {i + 1} <code className="wf-key" title="The branch's port">{b.id}</code>
            </legend>
            <div className="wf-row">
              <input id={`cfg-branch-${i}-name`} aria-label="Branch name" placeholder="Branch name" value={b.name || ''}
                disabled={disabled} onChange={(e) => rename(i, e.target.value)} />
              <button type="button" className="wf-icon" title="Move up" aria-label="Move up" disabled={disabled || i === 0}
                onClick={() => move(i, -1)}>↑</button>
              <button type="button" className="wf-icon" title="Move down" aria-label="Move down"
                disabled={disabled || i === branches.length - 1} onClick={() => move(i, 1)}>↓</button>
              <button type="button" className="wf-icon" title="Remove branch" aria-label="Remove branch" disabled={disabled}
                onClick={() => emit(branches.filter((_, j) => j !== i))}>×</button>
            </div>
            <div className="wf-row">
              <OperatorSelect id={`cfg-branch-${i}-operator`} value={b.operator} operators={operators} disabled={disabled}
                onChange={(op) => emit(branches.map((x, j) => (j === i ? withOperator(x, op) : x)))} />
              {!NO_VALUE.includes(b.operator) && (
                <TypedValue key={`${i}-${b.id}`} id={`cfg-branch-${i}-value`} value={b.value} disabled={disabled}
                  onChange={(value) => emit(branches.map((x, j) => (j === i ? { ...x, value } : x)))} />
              )}
            </div>
            {['id', 'name', 'operator', 'value', ''].map((f) => {
              const message = f ? rowErr(f) : err(`branches.${i}`);
              return message ? <div className="wf-field-message" key={f}>{f ? `${f}: ` : ''}{message}</div> : null;
            })}
          </fieldset>
        );
      })}
      <button type="button" className="wf-add-row" id="cfg-add-branch" disabled={disabled || branches.length >= MAX_BRANCHES}
        onClick={add}>
        + Add branch
      </button>
    </div>
  );
}

export function ConditionForm({ config, set, disabled, schema, err, fields }) {
  const operators = choices(schema, 'operator', OPERATORS);
  const multi = config.mode === 'multi';
  const needsValue = !NO_VALUE.includes(config.operator);
  const toMulti = () => {
    // The yes/no test becomes the first branch, so nothing typed is lost.
    const { operator, value, ...rest } = config;
    const first = operator ? [withOperator({ id: 'yes', name: 'Yes', value }, operator)] : [];
    set({ ...rest, mode: 'multi', branches: first });
  };
  const toBinary = () => {
    const { mode, branches, ...rest } = config;
    const first = (branches || [])[0];
    set(first ? withOperator({ ...rest, value: first.value }, first.operator) : rest);
  };
  return (
    <>
      <Field label="Branching" id="cfg-mode-binary">
        <label className="wf-check">
          <input type="radio" name="cfg-mode" id="cfg-mode-binary" checked={!multi} disabled={disabled}
            onChange={toBinary} />
          Yes / no
        </label>
        <label className="wf-check">
          <input type="radio" name="cfg-mode" id="cfg-mode-multi" checked={multi} disabled={disabled}
            onChange={toMulti} />
          Several branches (first match wins, else “default”)
        </label>
      </Field>
      <Field label="Field" id="cfg-field" error={err('field')}
        hint="data.<key>, contact.email, contact.subscribed, contact.<key> or event.<key>; suggestions come from recent data.">
        <input id="cfg-field" list="cfg-field-suggestions" value={config.field || ''} disabled={disabled}
          placeholder="contact.plan" autoComplete="off"
          onChange={(e) => set({ ...config, field: e.target.value })} />
        <datalist id="cfg-field-suggestions">
          {fields.map((f) => <option key={f} value={f} />)}
        </datalist>
      </Field>
      {multi ? (
        <Field label="Branches" id="cfg-add-branch" error={err('branches') || err('mode') || err('')}>
          <BranchList config={config} set={set} disabled={disabled} operators={operators} err={err} />
        </Field>
      ) : (
        <>
          <Field label="Operator" id="cfg-operator" error={err('operator')}>
            <OperatorSelect id="cfg-operator" value={config.operator} operators={operators} disabled={disabled}
              onChange={(op) => {
                const next = { ...config, operator: op };
                if (NO_VALUE.includes(op)) delete next.value;
                set(next);
              }} />
          </Field>
          {needsValue && (
            <Field label="Value" id="cfg-value" error={err('value') || err('')}>
              <div className="wf-row">
                <TypedValue id="cfg-value" value={config.value} disabled={disabled}
                  onChange={(value) => set({ ...config, value })} />
              </div>
            </Field>
          )}
        </>
      )}
    </>
  );
}
