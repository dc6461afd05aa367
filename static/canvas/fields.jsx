// Small pieces every config form uses: the labelled field, values shown as text, and enums
// read from a step type's JSON schema.
import React from 'react';

// The enum of a config property called `name`, wherever the schema declares it (at the top,
// behind a $ref or anyOf, or in a nested model under $defs); [] when it declares none.
export function enumOf(schema, name) {
  const resolve = (prop) => {
    if (!prop) return null;
    if (prop.enum) return prop.enum;
    if (prop.const !== undefined) return [prop.const];
    if (prop.$ref) return resolve(schema.$defs?.[prop.$ref.split('/').pop()]);
    for (const option of prop.anyOf || prop.oneOf || []) {
      const found = resolve(option);
      if (found) return found;
    }
    return null;
  };
  for (const model of [schema, ...Object.values(schema?.$defs || {})]) {
    const found = resolve(model?.properties?.[name]);
    if (found) return found.filter((v) => v !== null);
  }
  return [];
}

// What the schema offers, else the canonical list (the schema may lag behind the server).
export function choices(schema, name, fallback) {
  const found = enumOf(schema, name);
  return found.length ? found : fallback;
}

export function Field({ label, hint, error, children, id }) {
  return (
    <div className={`wf-field${error ? ' wf-field-error' : ''}`}>
      <label htmlFor={id}>{label}</label>
      {children}
      {hint && <div className="help">{hint}</div>}
      {error && <div className="wf-field-message">{error}</div>}
    </div>
  );
}

export function showValue(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

