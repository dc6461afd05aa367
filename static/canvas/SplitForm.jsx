// The A/B Split form: 2-10 branches, each an id (its port, what transitions name) and a
// weight; each branch's share of the total is shown as it is typed.
import React, { useState } from 'react';
import { Field } from './fields.jsx';

const BRANCH_ID = /^[A-Za-z0-9_-]{1,64}$/;

function limits(schema) {
  const prop = schema?.properties?.branches || {};
  return { min: prop.minItems ?? 2, max: prop.maxItems ?? 10 };
}

const validWeight = (w) => typeof w === 'number' && Number.isFinite(w) && w > 0;

// Each branch's share in % (null for a branch whose weight is not a positive number yet).
export function splitShares(branches) {
  const list = Array.isArray(branches) ? branches : [];
  const total = list.reduce((sum, b) => sum + (validWeight(b?.weight) ? b.weight : 0), 0);
  return list.map((b) => (validWeight(b?.weight) && total > 0 ? (b.weight * 100) / total : null));
}

export function formatShare(share) {
  if (share == null) return '—';
  const rounded = Math.round(share * 10) / 10;
  return `${Number.isInteger(rounded) ? rounded : rounded.toFixed(1)}%`;
}

function nextId(branches) {
  const taken = new Set(branches.map((b) => b.id));
  for (const letter of 'abcdefghijklmnopqrstuvwxyz') if (!taken.has(letter)) return letter;
  let n = branches.length + 1;
  while (taken.has(`branch-${n}`)) n += 1;
  return `branch-${n}`;
}

export function SplitForm({ config, set, disabled, schema, err }) {
  const branches = Array.isArray(config.branches) ? config.branches : [];
  const { min, max } = limits(schema);
  const shares = splitShares(branches);
  // An id being typed that is not usable yet (empty, a bad character, taken) stays here and
  // the config keeps the last good one, so the branch's port and its connection stay put.
  const [drafts, setDrafts] = useState({});
  const emit = (next, renamedPorts) => set({ ...config, branches: next }, renamedPorts);

  const idProblem = (i, text) => {
    if (!BRANCH_ID.test(text)) return 'Letters, digits, - and _ only (1-64 characters).';
    if (branches.some((b, j) => j !== i && b.id === text)) return `“${text}” is already a branch here.`;
    return '';
  };
  const rename = (i, text) => {
    if (idProblem(i, text)) {
      setDrafts({ ...drafts, [i]: text });
      return;
    }
    const { [i]: _, ...rest } = drafts;
    setDrafts(rest);
    const old = branches[i].id;
    if (old === text) return;
    emit(
      branches.map((b, j) => (j === i ? { ...b, id: text } : b)),
      old ? { [old]: text } : undefined,
    );
  };
  const remove = (i) => {
    setDrafts({}); // rows shift: a draft would land on the wrong one
    emit(branches.filter((_, j) => j !== i));
  };
  const add = () => {
    setDrafts({});
    emit([...branches, { id: nextId(branches), weight: 50 }]);
  };
  const even = () => emit(branches.map((b) => ({ ...b, weight: 1 })));

  return (
    <Field label="Branches" id="cfg-add-split-branch" error={err('branches') || err('')}
      hint="Each contact always takes the same branch; over many contacts each gets its share. The id names the branch's output.">
      <div className="wf-split" data-testid="split-branches">
        {branches.map((b, i) => {
          const draft = drafts[i];
          const localIdError = draft !== undefined ? idProblem(i, draft) : '';
          const weightError = validWeight(b.weight) ? '' : 'A weight is a number above 0.';
          const messages = [
            localIdError || err(`branches.${i}.id`),
            (b.weight != null && weightError) || err(`branches.${i}.weight`),
            err(`branches.${i}`),
          ].filter(Boolean);
          return (
            <div className={`wf-split-row${messages.length ? ' wf-field-error' : ''}`} key={i} data-testid={`split-branch-${i}`}>
              <div className="wf-row">
                <input id={`cfg-split-${i}-id`} className="wf-split-id" aria-label="Branch id" placeholder="id"
                  value={draft ?? b.id ?? ''} disabled={disabled} onChange={(e) => rename(i, e.target.value)} />
                <input id={`cfg-split-${i}-weight`} className="wf-split-weight" type="number" min="0" step="any"
                  aria-label="Weight" title="Weight" value={b.weight ?? ''} disabled={disabled}
                  onChange={(e) => {
                    const weight = e.target.value === '' ? null : Number(e.target.value);
                    emit(branches.map((x, j) => (j === i ? { ...x, weight } : x)));
                  }} />
                <output className="wf-split-share" id={`cfg-split-${i}-share`} htmlFor={`cfg-split-${i}-weight`}
                  title="This branch's share of the contacts">
                  {formatShare(shares[i])}
                </output>
                <button type="button" className="wf-icon" title="Remove branch" aria-label="Remove branch"
                  disabled={disabled || branches.length <= min} onClick={() => remove(i)}>×</button>
              </div>
              {messages.map((m) => <div className="wf-field-message" key={m}>{m}</div>)}
            </div>
          );
        })}
        <div className="wf-row">
          <button type="button" className="wf-add-row" id="cfg-add-split-branch" disabled={disabled || branches.length >= max}
            onClick={add}>
            + Add branch
          </button>
          <button type="button" className="wf-add-row" id="cfg-split-even" disabled={disabled || branches.length === 0}
            onClick={even} title="Give every branch the same weight">
            Split evenly
          </button>
        </div>
        <div className="help">{min} to {max} branches.</div>
      </div>
    </Field>
  );
}

// A Split's ports say their share too ("a 70%"); other steps' ports are left as they are.
export function withShares(stepType, config, ports) {
  if (stepType !== 'split') return ports;
  const branches = Array.isArray(config?.branches) ? config.branches : [];
  const shares = splitShares(branches);
  const shareOf = new Map(branches.map((b, i) => [b?.id, shares[i]]));
  return ports.map((p) => ({ ...p, label: `${p.label} ${formatShare(shareOf.get(p.id))}` }));
}

// The node's one line: "a 70% · b 30%".
export function splitSummary(config) {
  const branches = Array.isArray(config?.branches) ? config.branches : [];
  if (!branches.length) return 'No branches';
  const shares = splitShares(branches);
  return branches.map((b, i) => `${b?.id || '?'} ${formatShare(shares[i])}`).join(' · ');
}
