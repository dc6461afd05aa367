// The form a step type gets when it names no hand-written one (StepType.form ""): generated
// from its config's JSON schema (pydantic's model_json_schema), so a new type is edited with
// fields, not JSON. It renders strings, numbers, booleans, enums (Literal), nullable fields
// (anyOf with null), lists of strings or of enum values, and nested models one level deep
// ($ref into $defs); anything else is edited as JSON in its own box. Values keep their JSON
// type (a number field stores a number), an emptied optional field leaves the config (the
// server's default applies), and the server's errors show under their fields. "Edit as JSON"
// switches to the whole config as text.
import React, { useState } from 'react';
import { Field } from './fields.jsx';

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// A property's schema with $ref (and pydantic's allOf-of-one-$ref) resolved, and `anyOf: [X,
// null]` read as a nullable X. The referring node's own keys (title, description, default) win.
function resolve(schema, prop) {
  let node = prop || {};
  let nullable = false;
  for (let guard = 0; guard < 8; guard += 1) {
    const { $ref, allOf, anyOf, ...own } = node;
    if ($ref) {
      node = { ...(schema?.$defs?.[$ref.split('/').pop()] || {}), ...own };
    } else if (allOf?.length === 1) {
      node = { ...allOf[0], ...own };
    } else if (anyOf) {
      const rest = anyOf.filter((o) => o.type !== 'null');
      if (rest.length === anyOf.length || rest.length !== 1) return { node, nullable };
      nullable = true;
      node = { ...rest[0], ...own };
    } else {
      break;
    }
  }
  if (Array.isArray(node.type)) {
    const rest = node.type.filter((t) => t !== 'null');
    if (rest.length < node.type.length) nullable = true;
    if (rest.length === 1) node = { ...node, type: rest[0] };
  }
  return { node, nullable };
}

function enumValues(node) {
  if (Array.isArray(node.enum)) return node.enum.filter((v) => v !== null);
  if (node.const !== undefined) return [node.const];
  return null;
}

// How a property is edited: the kind of input, or 'json' for what the form can not render.
function kindOf(node, depth) {
  if (enumValues(node)) return 'enum';
  if (node.type === 'string') return 'string';
  if (node.type === 'number' || node.type === 'integer') return 'number';
  if (node.type === 'boolean') return 'boolean';
  if (node.type === 'array' && !Array.isArray(node.items)) {
    const items = node.items || {};
    if (enumValues(items)) return 'enum-list';
    if (items.type === 'string') return 'string-list';
  }
  if (node.type === 'object' && node.properties && depth === 0) return 'object';
  return 'json';
}

const idOf = (path) => `cfg-prop-${path.replace(/[^A-Za-z0-9_-]/g, '-')}`;

function Label({ title, required }) {
  return (
    <>
      {title}
      {required && <span className="wf-required" title="Required" aria-hidden="true"> *</span>}
    </>
  );
}

function StringList({ id, value, onChange, disabled, label }) {
  // Rows being typed (an empty one included) stay here; the config gets the non-empty ones.
  const [rows, setRows] = useState(() => (Array.isArray(value) ? value.map(String) : []));
  const emit = (next) => {
    setRows(next);
    onChange(next.filter((r) => r.trim() !== ''));
  };
  return (
    <div className="wf-kv" id={id}>
      {rows.map((v, i) => (
        <div className="wf-row" key={i}>
          <input aria-label={`${label} ${i + 1}`} value={v} disabled={disabled}
            onChange={(e) => emit(rows.map((r, j) => (j === i ? e.target.value : r)))} />
          <button type="button" className="wf-icon" aria-label="Remove row" disabled={disabled}
            onClick={() => emit(rows.filter((_, j) => j !== i))}>×</button>
        </div>
      ))}
      <button type="button" className="wf-add-row" disabled={disabled} onClick={() => setRows([...rows, ''])}>
        + Add
      </button>
    </div>
  );
}

// One value as JSON text, for what the form can not render (a union, a list of objects...).
function JsonValue({ id, value, onChange, disabled, onBad }) {
  const [text, setText] = useState(value === undefined ? '' : JSON.stringify(value, null, 2));
  return (
    <textarea id={id} rows="4" className="wf-json" value={text} disabled={disabled}
      onChange={(e) => {
        setText(e.target.value);
        if (!e.target.value.trim()) {
          onBad('');
          onChange(undefined);
          return;
        }
        try {
          onChange(JSON.parse(e.target.value));
          onBad('');
        } catch {
          onBad('Not valid JSON yet; the last valid value is kept.');
        }
      }} />
  );
}

// One property: its input, label (title, * when required), hint (description) and errors.
function Property({ schema, name, prop, path, required, value, onChange, disabled, err, depth }) {
  const [bad, setBad] = useState('');
  const { node, nullable } = resolve(schema, prop);
  const kind = kindOf(node, depth);
  const id = idOf(path);
  const title = node.title || name;
  const hint = node.description;
  // An emptied field: gone from the config when optional (the default applies), null when it
  // must be there and may be null, else empty (the server then says what it needs).
  const empty = (blank) => onChange(!required ? undefined : nullable ? null : blank);

  if (kind === 'object') {
    const current = isObject(value) ? value : {};
    const inner = node.required || [];
    return (
      <fieldset className="wf-branch wf-schema-object" id={id}>
        <legend><Label title={title} required={required} /></legend>
        {hint && <div className="help">{hint}</div>}
        {err(path) && <div className="wf-field-message">{err(path)}</div>}
        {Object.entries(node.properties).map(([sub, subProp]) => (
          <Property key={sub} schema={schema} name={sub} prop={subProp} path={`${path}.${sub}`}
            required={inner.includes(sub)} value={current[sub]} disabled={disabled} err={err} depth={depth + 1}
            onChange={(v) => {
              const next = { ...current };
              if (v === undefined) delete next[sub];
              else next[sub] = v;
              if (Object.keys(next).length === 0 && !required) onChange(undefined);
              else onChange(next);
            }} />
        ))}
      </fieldset>
    );
  }

  let input;
  let listErrors = [];
  if (kind === 'enum') {
    const options = enumValues(node);
    const at = options.findIndex((o) => JSON.stringify(o) === JSON.stringify(value));
    input = (
      <select id={id} value={at < 0 ? '' : String(at)} disabled={disabled}
        onChange={(e) => (e.target.value === '' ? empty(undefined) : onChange(options[Number(e.target.value)]))}>
        {(at < 0 || !required || nullable) && (
          <option value="">{node.default !== undefined && node.default !== null ? `Default (${node.default})` : '—'}</option>
        )}
        {options.map((o, i) => <option key={i} value={String(i)}>{String(o)}</option>)}
      </select>
    );
  } else if (kind === 'string') {
    const type = { email: 'email', uri: 'url' }[node.format] || 'text';
    input = (
      <input id={id} type={type} value={typeof value === 'string' ? value : value == null ? '' : String(value)}
        disabled={disabled} placeholder={typeof node.default === 'string' ? node.default : ''}
        maxLength={node.maxLength} onChange={(e) => (e.target.value === '' ? empty('') : onChange(e.target.value))} />
    );
  } else if (kind === 'number') {
    input = (
      <input id={id} type="number" value={typeof value === 'number' ? value : ''} disabled={disabled}
        step={node.type === 'integer' ? '1' : 'any'} min={node.minimum ?? node.exclusiveMinimum}
        max={node.maximum ?? node.exclusiveMaximum}
        placeholder={typeof node.default === 'number' ? String(node.default) : ''}
        onChange={(e) => (e.target.value === '' ? empty(undefined) : onChange(Number(e.target.value)))} />
    );
  } else if (kind === 'boolean') {
    // The checkbox's own label is the title; unset, it shows the default.
    const error = err(path);
    return (
      <div className={`wf-field${error ? ' wf-field-error' : ''}`}>
        <label className="wf-check">
          <input id={id} type="checkbox" checked={value === undefined ? node.default === true : Boolean(value)}
            disabled={disabled} onChange={(e) => onChange(e.target.checked)} />
          <Label title={title} required={required} />
        </label>
        {hint && <div className="help">{hint}</div>}
        {error && <div className="wf-field-message">{error}</div>}
      </div>
    );
  } else if (kind === 'enum-list') {
    const options = enumValues(node.items);
    const chosen = Array.isArray(value) ? value : [];
    input = (
      <div id={id}>
        {options.map((o, i) => (
          <label className="wf-check" key={i}>
            <input type="checkbox" id={`${id}-${i}`} disabled={disabled} checked={chosen.includes(o)}
              onChange={(e) => onChange(e.target.checked ? [...chosen, o] : chosen.filter((c) => c !== o))} />
            {String(o)}
          </label>
        ))}
      </div>
    );
  } else if (kind === 'string-list') {
    const list = Array.isArray(value) ? value : [];
    listErrors = list.map((_, i) => err(`${path}.${i}`)).filter(Boolean);
    input = <StringList id={id} value={value} label={title} disabled={disabled} onChange={onChange} />;
  } else {
    input = <JsonValue id={id} value={value} disabled={disabled} onChange={onChange} onBad={setBad} />;
  }
  return (
    <Field label={<Label title={title} required={required} />} id={kind === 'string-list' ? undefined : id}
      hint={kind === 'json' ? [hint, 'As JSON.'].filter(Boolean).join(' ') : hint}
      error={[bad, err(path), ...listErrors].filter(Boolean).join(' ')}>
      {input}
    </Field>
  );
}

// The whole config as JSON text: the switch away from the generated form, and what a type the
// canvas has no schema for gets.
export function JsonForm({ config, set, disabled, err }) {
  const [text, setText] = useState(JSON.stringify(config, null, 2));
  const [bad, setBad] = useState('');
  return (
    <Field label="Config (JSON)" id="cfg-json" error={bad || err('')}>
      <textarea id="cfg-json" rows="8" value={text} disabled={disabled}
        onChange={(e) => {
          setText(e.target.value);
          try {
            set(JSON.parse(e.target.value));
            setBad('');
          } catch {
            setBad('Not valid JSON yet.');
          }
        }} />
    </Field>
  );
}

export function SchemaForm({ config, set, disabled, schema, err }) {
  const [asJson, setAsJson] = useState(false);
  const properties = schema?.properties || {};
  const required = schema?.required || [];
  const current = isObject(config) ? config : {};
  // Keys the schema does not know (a typo in an imported file): shown, to be removed.
  const unknown = Object.keys(current).filter((k) => !(k in properties));
  const update = (key, v) => {
    const next = { ...current };
    if (v === undefined) delete next[key];
    else next[key] = v;
    set(next);
  };
  const toggle = (
    <button type="button" className="wf-add-row" id="cfg-as-json" disabled={asJson && !isObject(config)}
      title={asJson && !isObject(config) ? 'The config must be a JSON object to edit as a form' : undefined}
      onClick={() => setAsJson(!asJson)}>
      {asJson ? 'Edit as form' : 'Edit as JSON'}
    </button>
  );
  if (asJson) {
    return (
      <div className="wf-schema-form">
        <JsonForm config={config} set={set} disabled={disabled} err={err} />
        {toggle}
      </div>
    );
  }
  return (
    <div className="wf-schema-form" data-testid="schema-form">
      {Object.keys(current).length > 0 && err('') && <ul className="errorlist"><li>{err('')}</li></ul>}
      {Object.keys(properties).length === 0 && <p className="help">This step has no settings.</p>}
      {Object.entries(properties).map(([key, prop]) => (
        <Property key={key} schema={schema} name={key} prop={prop} path={key} required={required.includes(key)}
          value={current[key]} disabled={disabled} err={err} depth={0} onChange={(v) => update(key, v)} />
      ))}
      {unknown.map((key) => (
        <Field key={key} label={`${key} (not a setting of this step)`} id={idOf(key)} error={err(key)}>
          <button type="button" className="wf-icon" id={idOf(key)} disabled={disabled} onClick={() => update(key, undefined)}>
            Remove
          </button>
        </Field>
      ))}
      {toggle}
    </div>
  );
}
