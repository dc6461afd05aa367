// The canvas: palette, React Flow graph, side panel, toolbar, lock banner and save.
import React, { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  useEdgesState,
  useNodesState,
  useReactFlow,
} from '@xyflow/react';
import { CanvasContext } from './context.js';
import { ConfigPanel } from './ConfigPanel.jsx';
import { StepNode, TriggerNode } from './nodes.jsx';
import { loadFields, loadState, saveGraph } from './api.js';
import {
  branchesFor,
  connectionProblem,
  defaultConfig,
  documentToFlow,
  edgeId,
  flowToDocument,
  makeEdge,
  newKey,
  tidy,
} from './graph.js';

const nodeTypes = { step: StepNode, trigger: TriggerNode };
const COUNTS_EVERY_MS = 15000;

function Palette({ palette, onAdd, disabled }) {
  return (
    <nav className="wf-palette" aria-label="Add a step">
      <div className="wf-palette-title">Add a step</div>
      {Object.values(palette).map((kind) => (
        <button
          key={kind.type}
          type="button"
          className={`wf-palette-item wf-type-${kind.type}`}
          title={kind.description}
          disabled={disabled}
          draggable={!disabled}
          data-step-type={kind.type}
          onDragStart={(e) => e.dataTransfer.setData('application/x-step-type', kind.type)}
          onClick={() => onAdd(kind.type)}
        >
          {kind.label}
        </button>
      ))}
    </nav>
  );
}

function LockBanner({ lock, executionsUrl, cancelAllUrl }) {
  if (!lock?.locked) return null;
  return (
    <div className="wf-banner wf-banner-lock" role="status" data-testid="lock-banner">
      <strong>Read-only: {lock.active} active execution{lock.active === 1 ? '' : 's'}.</strong>{' '}
      {lock.message}{' '}
      <a href={`${executionsUrl}?status=active`}>See them</a>
      {cancelAllUrl && (
        <>
          {' · '}
          <a href={cancelAllUrl}>Cancel all</a>
        </>
      )}
    </div>
  );
}

export function App({ urls, csrfToken }) {
  const [state, setState] = useState(null);
  const [loadError, setLoadError] = useState('');
  const [nodes, setNodes, onNodesChange] = useNodesState([]);
  const [edges, setEdges, onEdgesChange] = useEdgesState([]);
  const [selectedId, setSelectedId] = useState(null);
  const [errors, setErrors] = useState([]);
  const [notice, setNotice] = useState(null); // {kind: 'error'|'info'|'success', text}
  const [saveError, setSaveError] = useState(null); // {text, locked}
  const [dirty, setDirty] = useState(false);
  const [saving, setSaving] = useState(false);
  const [fields, setFields] = useState([]);
  const [counts, setCounts] = useState({});
  const [lock, setLock] = useState(null);
  const flow = useReactFlow();
  const wrapper = useRef(null);

  const palette = useMemo(
    () => Object.fromEntries((state?.palette || []).map((k) => [k.type, k])),
    [state],
  );
  const readOnly = !state || !state.can_change || Boolean(lock?.locked);

  const apply = useCallback(
    (next) => {
      const { nodes: n, edges: e } = documentToFlow(next.graph, next.workflow);
      setNodes(n);
      setEdges(e);
      setCounts(next.counts || {});
      setLock(next.lock);
      setState(next);
    },
    [setNodes, setEdges],
  );

  useEffect(() => {
    loadState(urls.state).then(apply, (err) => setLoadError(err.message));
    loadFields(urls.fields).then(setFields);
  }, [urls, apply]);

  // Live counts (and the lock) refresh in the background; the graph being edited is untouched.
  useEffect(() => {
    const timer = setInterval(async () => {
      try {
        const fresh = await loadState(`${urls.state}?only=counts`);
        setCounts(fresh.counts);
        setLock(fresh.lock);
      } catch {
        /* a missed refresh is harmless */
      }
    }, COUNTS_EVERY_MS);
    return () => clearInterval(timer);
  }, [urls]);

  // Unsaved changes are not lost by accident.
  useEffect(() => {
    if (!dirty) return undefined;
    const warn = (e) => {
      e.preventDefault();
      e.returnValue = '';
    };
    window.addEventListener('beforeunload', warn);
    return () => window.removeEventListener('beforeunload', warn);
  }, [dirty]);

  const changed = useCallback(() => {
    setDirty(true);
    setSaveError(null);
    setNotice((n) => (n?.kind === 'success' ? null : n));
  }, []);

  const handleNodesChange = useCallback(
    (changes) => {
      if (readOnly) {
        onNodesChange(changes.filter((c) => c.type === 'select' || c.type === 'dimensions'));
        return;
      }
      const kept = changes.filter((c) => !(c.type === 'remove' && c.id === 'trigger'));
      onNodesChange(kept);
      if (kept.some((c) => c.type === 'remove')) {
        const gone = new Set(kept.filter((c) => c.type === 'remove').map((c) => c.id));
        setEdges((es) => es.filter((e) => !gone.has(e.source) && !gone.has(e.target)));
      }
      if (kept.some((c) => c.type === 'remove' || (c.type === 'position' && c.dragging === false))) {
        changed();
      }
    },
    [onNodesChange, readOnly, setEdges, changed],
  );

  const handleEdgesChange = useCallback(
    (changes) => {
      const allowed = readOnly ? changes.filter((c) => c.type === 'select') : changes;
      onEdgesChange(allowed);
      if (allowed.some((c) => c.type === 'remove')) changed();
    },
    [onEdgesChange, readOnly, changed],
  );

  const problem = useCallback(
    (connection) => connectionProblem(connection, nodes, edges, palette),
    [nodes, edges, palette],
  );

  const connect = useCallback(
    (connection) => {
      const why = problem(connection);
      if (why) {
        setNotice({ kind: 'error', text: `Not connected: ${why}` });
        return false;
      }
      setEdges((es) => [...es, makeEdge(connection.source, connection.sourceHandle || 'next', connection.target)]);
      setNotice(null);
      changed();
      return true;
    },
    [problem, setEdges, changed],
  );

  // A refused drag (isValidConnection said no) still deserves a reason.
  const onConnectEnd = useCallback(
    (_, connectionState) => {
      if (connectionState.isValid === false && connectionState.toNode && connectionState.fromNode) {
        const why = problem({
          source: connectionState.fromNode.id,
          sourceHandle: connectionState.fromHandle?.id,
          target: connectionState.toNode.id,
        });
        if (why) setNotice({ kind: 'error', text: `Not connected: ${why}` });
      }
    },
    [problem],
  );

  const connectPort = useCallback(
    (source, branch, target) => {
      const without = edges.filter((e) => e.id !== edgeId(source, branch));
      if (!target) {
        setEdges(without);
        changed();
        return;
      }
      const why = connectionProblem({ source, sourceHandle: branch, target }, nodes, without, palette);
      if (why) {
        setNotice({ kind: 'error', text: `Not connected: ${why}` });
        return;
      }
      setEdges([...without, makeEdge(source, branch, target)]);
      setNotice(null);
      changed();
    },
    [edges, nodes, palette, setEdges, changed],
  );

  const addStep = useCallback(
    (type, position) => {
      const kind = palette[type];
      const key = newKey(type, nodes);
      let where = position;
      const anchor = !where && nodes.find((n) => n.id === selectedId);
      if (anchor) {
        // Added while a step is selected: it goes right below it, ready to be connected.
        where = { x: anchor.position.x, y: anchor.position.y + (anchor.measured?.height || 96) + 70 };
      }
      if (!where) {
        const box = wrapper.current?.getBoundingClientRect();
        const centre = box
          ? flow.screenToFlowPosition({ x: box.left + box.width / 2, y: box.top + box.height / 2 })
          : { x: 0, y: 0 };
        const offset = (nodes.length % 6) * 24;
        where = { x: Math.round(centre.x - 115 + offset), y: Math.round(centre.y - 48 + offset) };
      }
      setNodes((ns) => [
        ...ns.map((n) => ({ ...n, selected: false })),
        {
          id: key,
          type: 'step',
          position: where,
          selected: true,
          data: { stepType: type, name: kind.label, config: defaultConfig(kind) },
        },
      ]);
      setSelectedId(key);
      changed();
      if (anchor) {
        // Keep the new step in view: the column grows downwards.
        flow.setCenter(where.x + 115, where.y + 48, { zoom: flow.getZoom(), duration: 150 });
      }
    },
    [palette, nodes, selectedId, flow, setNodes, changed],
  );

  const onDrop = useCallback(
    (e) => {
      const type = e.dataTransfer.getData('application/x-step-type');
      if (!type || readOnly) return;
      e.preventDefault();
      addStep(type, flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }));
    },
    [addStep, flow, readOnly],
  );

  const updateNode = useCallback(
    (id, patch) => {
      setNodes((ns) =>
        ns.map((n) => {
          if (n.id !== id) return n;
          return { ...n, data: { ...n.data, ...patch } };
        }),
      );
      if (patch.config) {
        // A port that disappears (a Wait for Event's timeout switched off) takes its edge along.
        const node = nodes.find((n) => n.id === id);
        const ports = branchesFor(palette[node?.data.stepType], patch.config);
        setEdges((es) => es.filter((e) => e.source !== id || ports.includes(e.sourceHandle || 'next')));
      }
      changed();
    },
    [nodes, palette, setNodes, setEdges, changed],
  );

  const deleteSelected = useCallback(() => {
    if (!selectedId) return;
    setNodes((ns) => ns.filter((n) => n.id !== selectedId));
    setEdges((es) => es.filter((e) => e.source !== selectedId && e.target !== selectedId));
    setSelectedId(null);
    changed();
  }, [selectedId, setNodes, setEdges, changed]);

  const tidyUp = useCallback(() => {
    setNodes((ns) => tidy(ns, edges));
    changed();
    setTimeout(() => flow.fitView({ padding: 0.15, duration: 200, maxZoom: 1 }), 50);
  }, [edges, setNodes, flow, changed]);

  const save = useCallback(async () => {
    setSaving(true);
    setNotice(null);
    setSaveError(null);
    const graph = flowToDocument(nodes, edges);
    try {
      const { status, body } = await saveGraph(urls.state, csrfToken, graph, state.workflow.graph_version);
      if (status === 200) {
        setErrors([]);
        setDirty(false);
        setCounts(body.counts || {});
        setLock(body.lock);
        setState((s) => ({ ...s, workflow: body.workflow, graph: body.graph }));
        setNotice({ kind: 'success', text: 'Saved.' });
      } else if (status === 400 && body.errors) {
        setErrors(body.errors);
        const count = body.errors.length;
        setSaveError({ text: `Not saved: ${count} problem${count === 1 ? '' : 's'} to fix (marked in red).` });
        const first = body.errors.find((e) => e.step && nodes.some((n) => n.id === e.step));
        if (first) setSelectedId(first.step);
      } else {
        setSaveError({ text: body.message || `Not saved (HTTP ${status}).`, locked: Boolean(body.locked) });
        if (body.locked) setLock({ locked: true, active: body.active, message: body.message, pending: true });
      }
    } catch (err) {
      setSaveError({ text: `Not saved: ${err.message}` });
    } finally {
      setSaving(false);
    }
  }, [nodes, edges, urls, csrfToken, state]);

  const errorsByStep = useMemo(() => {
    const out = {};
    for (const e of errors) if (e.step) (out[e.step] ||= []).push(e);
    return out;
  }, [errors]);
  const graphErrors = errors.filter((e) => !e.step || !nodes.some((n) => n.id === e.step));
  const selected = nodes.find((n) => n.id === selectedId && n.type === 'step');
  const context = useMemo(() => ({ palette, counts, errorsByStep }), [palette, counts, errorsByStep]);

  if (loadError) return <p className="errornote">{loadError}</p>;
  if (!state) return <p className="canvas-placeholder">Loading the canvas…</p>;

  const lockedWhileEditing = saveError?.locked;
  return (
    <CanvasContext.Provider value={context}>
      {!lockedWhileEditing && <LockBanner lock={lock} executionsUrl={urls.executions} cancelAllUrl={urls.cancelAll} />}
      {!state.can_change && (
        <div className="wf-banner" role="status">You can view this workflow but not change it.</div>
      )}
      <div className="wf-toolbar-canvas">
        <button type="button" className="button default wf-save" onClick={save} disabled={readOnly || saving || !dirty}>
          {saving ? 'Saving…' : 'Save graph'}
        </button>
        <button type="button" className="button" onClick={tidyUp} disabled={readOnly}>Tidy up</button>
        <button type="button" className="button" onClick={() => flow.fitView({ padding: 0.15, duration: 200, maxZoom: 1 })}>Fit view</button>
        <span className="wf-dirty" data-testid="dirty-state">{dirty ? 'Unsaved changes' : 'All changes saved'}</span>
        {notice && (
          <span className={`wf-notice wf-notice-${notice.kind}`} role={notice.kind === 'error' ? 'alert' : 'status'} data-testid="notice">
            {notice.text}
          </span>
        )}
      </div>
      {saveError && (
        <div className={`wf-banner wf-banner-error${saveError.locked ? ' wf-banner-lock' : ''}`} role="alert" data-testid="save-error">
          {saveError.text}
          {saveError.locked && (
            <>
              {' '}
              <a href={`${urls.executions}?status=active`}>See them</a>
              {urls.cancelAll && <>{' · '}<a href={urls.cancelAll}>Cancel all</a></>}
            </>
          )}
          {graphErrors.length > 0 && (
            <ul data-testid="graph-errors">
              {graphErrors.map((e, i) => <li key={i}>{e.message}</li>)}
            </ul>
          )}
        </div>
      )}
      <div className={`wf-editor${readOnly ? ' wf-readonly' : ''}`}>
        {!readOnly && <Palette palette={palette} onAdd={(type) => addStep(type)} disabled={readOnly} />}
        <div className="wf-flow" ref={wrapper} onDragOver={(e) => e.preventDefault()} onDrop={onDrop} data-testid="flow">
          <ReactFlow
            nodes={nodes}
            edges={edges}
            nodeTypes={nodeTypes}
            onNodesChange={handleNodesChange}
            onEdgesChange={handleEdgesChange}
            onConnect={connect}
            onConnectEnd={onConnectEnd}
            isValidConnection={(c) => !problem(c)}
            onSelectionChange={({ nodes: sel }) => setSelectedId(sel.length === 1 ? sel[0].id : null)}
            nodesDraggable={!readOnly}
            nodesConnectable={!readOnly}
            deleteKeyCode={readOnly ? null : ['Backspace', 'Delete']}
            fitView
            fitViewOptions={{ padding: 0.2, maxZoom: 1 }}
            minZoom={0.2}
            proOptions={{ hideAttribution: true }}
          >
            <Background gap={20} />
            <Controls showInteractive={false} />
            <MiniMap pannable zoomable className="wf-minimap" />
          </ReactFlow>
        </div>
        {selected && (
          <ConfigPanel
            node={selected}
            kind={palette[selected.data.stepType]}
            errors={errorsByStep[selected.id] || []}
            readOnly={readOnly}
            templates={state.templates}
            templateAddUrl={state.template_add_url}
            fields={fields}
            nodes={nodes}
            edges={edges}
            onChange={(patch) => updateNode(selected.id, patch)}
            onDelete={deleteSelected}
            onConnectPort={connectPort}
          />
        )}
      </div>
    </CanvasContext.Provider>
  );
}
