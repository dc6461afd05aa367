// The canvas: palette, React Flow graph, side panel, toolbar, lock banner and save.
import React, { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  useEdgesState,
  useNodesInitialized,
  useNodesState,
  useReactFlow,
} from '@xyflow/react';
import { CanvasContext } from './context.js';
import { ConfigPanel } from './ConfigPanel.jsx';
import { TestPanel, traceEdgeClass } from './TestPanel.jsx';
import { LockBanner, Palette, useFullScreen } from './parts.jsx';
import { StatsPanel, StatsToggle, edgeCount, withCount } from './StatsOverlay.jsx';
import { StepNode, TriggerNode } from './nodes.jsx';
import { loadFields, loadState, saveGraph } from './api.js';
import {
  branchesFor,
  connectionProblem,
  defaultConfig,
  documentToFlow,
  edgeId,
  edgeLabel,
  flowToDocument,
  makeEdge,
  needsLayout,
  newKey,
  portOrder,
  portsFor,
  tidy,
} from './graph.js';

const nodeTypes = { step: StepNode, trigger: TriggerNode };
const COUNTS_EVERY_MS = 15000;

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
  const [statsOn, setStatsOn] = useState(false);
  const [stats, setStats] = useState(null); // the stats overlay's figures, while it is on
  const [testing, setTesting] = useState(false);
  const [trace, setTrace] = useState(null); // the Test panel's path, highlighted
  const flow = useReactFlow();
  const [full, setFull] = useFullScreen(flow);
  const wrapper = useRef(null);
  const layoutPending = useRef(false);
  const nodesMeasured = useNodesInitialized();

  const palette = useMemo(
    () => Object.fromEntries((state?.palette || []).map((k) => [k.type, k])),
    [state],
  );
  // Two levels: `canChange` (the permission) allows names and positions, which stay editable
  // while runs are active; `readOnly` (no permission, or locked) freezes everything else.
  const canChange = Boolean(state?.can_change);
  const readOnly = !canChange || Boolean(lock?.locked);

  const apply = useCallback(
    (next) => {
      const { nodes: n, edges: e } = documentToFlow(next.graph, next.workflow);
      layoutPending.current = needsLayout(next.graph);
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

  // A graph whose steps lack positions (imported from a file that has none, some added through
  // the API) is laid out once its nodes are measured, and left unsaved so that Save keeps the
  // layout.
  useEffect(() => {
    if (!nodesMeasured || !layoutPending.current) return;
    layoutPending.current = false;
    setNodes((ns) => tidy(ns, edges, portOrder(ns, palette)));
    changed();
    setNotice({ kind: 'info', text: 'Some steps had no position of their own: the graph was laid out. Save to keep the layout.' });
    setTimeout(() => flow.fitView({ padding: 0.15, duration: 0, maxZoom: 1 }), 50);
  }, [nodesMeasured, edges, palette, setNodes, changed, flow]);


  const handleNodesChange = useCallback(
    (changes) => {
      if (readOnly) {
        // Locked: nodes still move (positions are cosmetic); nothing is added or removed.
        const moves = canChange ? ['select', 'dimensions', 'position'] : ['select', 'dimensions'];
        const kept = changes.filter((c) => moves.includes(c.type));
        onNodesChange(kept);
        if (kept.some((c) => c.type === 'position' && c.dragging === false)) changed();
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
    [onNodesChange, readOnly, canChange, setEdges, changed],
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
      if (readOnly) return false;
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
    [problem, readOnly, setEdges, changed],
  );

  // A refused drag (isValidConnection said no) still deserves a reason.
  const onConnectEnd = useCallback(
    (_, connectionState) => {
      if (readOnly) return;
      if (connectionState.isValid === false && connectionState.toNode && connectionState.fromNode) {
        const why = problem({
          source: connectionState.fromNode.id,
          sourceHandle: connectionState.fromHandle?.id,
          target: connectionState.toNode.id,
        });
        if (why) setNotice({ kind: 'error', text: `Not connected: ${why}` });
      }
    },
    [problem, readOnly],
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
    (id, { renamedPorts, ...patch }) => {
      if (readOnly && Object.keys(patch).some((k) => k !== 'name')) return; // locked: names only
      setNodes((ns) =>
        ns.map((n) => {
          if (n.id !== id) return n;
          return { ...n, data: { ...n.data, ...patch } };
        }),
      );
      if (patch.config) {
        // A renamed port keeps its edge; a port that disappears (a Wait for Event's timeout
        // switched off, a branch removed) takes its edge along.
        const node = nodes.find((n) => n.id === id);
        const ports = branchesFor(palette[node?.data.stepType], patch.config);
        setEdges((es) =>
          es
            .map((e) => {
              const to = e.source === id && renamedPorts?.[e.sourceHandle];
              return to ? makeEdge(id, to, e.target) : e;
            })
            .filter((e) => e.source !== id || ports.includes(e.sourceHandle || 'next')),
        );
      }
      changed();
    },
    [nodes, palette, readOnly, setNodes, setEdges, changed],
  );

  const deleteSelected = useCallback(() => {
    if (!selectedId) return;
    setNodes((ns) => ns.filter((n) => n.id !== selectedId));
    setEdges((es) => es.filter((e) => e.source !== selectedId && e.target !== selectedId));
    setSelectedId(null);
    changed();
  }, [selectedId, setNodes, setEdges, changed]);

  // Every edge says which branch it is: the port's label (a multi-branch Condition's branch
  // name), nothing for the plain `next`.
  const shownEdges = useMemo(() => {
    const portsOf = new Map(
      nodes.filter((n) => n.type === 'step').map((n) => [n.id, portsFor(palette[n.data.stepType], n.data.config)]),
    );
    return edges.map((e) => {
      const branch = e.sourceHandle || 'next';
      const label = withCount(edgeLabel(branch, portsOf.get(e.source)), edgeCount(e, stats, edges));
      const className = traceEdgeClass(trace, e);
      return label === e.label && className === e.className ? e : { ...e, label, className };
    });
  }, [nodes, edges, palette, stats, trace]);

  const tidyUp = useCallback(() => {
    setNodes((ns) => tidy(ns, edges, portOrder(ns, palette)));
    changed();
    setTimeout(() => flow.fitView({ padding: 0.15, duration: 200, maxZoom: 1 }), 50);
  }, [edges, palette, setNodes, flow, changed]);

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
  const context = useMemo(() => ({ palette, counts, errorsByStep, trace, stats }), [palette, counts, errorsByStep, trace, stats]);

  if (loadError) return <p className="errornote">{loadError}</p>;
  if (!state) return <p className="canvas-placeholder">Loading the canvas…</p>;

  const lockedWhileEditing = saveError?.locked;
  return (
    <CanvasContext.Provider value={context}>
      <div className={`wf-canvas${full ? ' wf-fullscreen' : ''}`} data-testid="canvas-root">
      {!lockedWhileEditing && (
        <LockBanner lock={lock} executionsUrl={urls.executions} cancelAllUrl={urls.cancelAll} canChange={canChange} />
      )}
      {!state.can_change && (
        <div className="wf-banner" role="status">You can view this workflow but not change it.</div>
      )}
      <div className="wf-toolbar-canvas">
        {full && <strong className="wf-full-title">{state.workflow.name}</strong>}
        <button type="button" className="button default wf-save" onClick={save} disabled={!canChange || saving || !dirty}>
          {saving ? 'Saving…' : 'Save graph'}
        </button>
        <button type="button" className="button" onClick={tidyUp} disabled={!canChange}>Tidy up</button>
        <button type="button" className="button" onClick={() => flow.fitView({ padding: 0.15, duration: 200, maxZoom: 1 })}>Fit view</button>
        <button type="button" className="button wf-fullscreen-toggle" aria-pressed={full} data-testid="fullscreen"
          title={full ? 'Leave full screen (Esc)' : 'Use the whole window'} onClick={() => setFull((f) => !f)}>
          {full ? 'Exit full screen' : 'Full screen'}
        </button>
        <button type="button" className="button wf-test-toggle" aria-pressed={testing} data-testid="test-toggle"
          onClick={() => { setTesting((t) => !t); setTrace(null); }}>
          {testing ? 'Close test' : 'Test'}
        </button>
        <StatsToggle on={statsOn} onToggle={setStatsOn} />
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
      {statsOn && (
        <StatsPanel url={`${urls.state}stats/`} hasSplit={nodes.some((n) => n.data?.stepType === 'split')} onStats={setStats} />
      )}
      <div className={`wf-editor${readOnly ? ' wf-readonly' : ''}${trace ? ' wf-tracing' : ''}`}>
        {!readOnly && <Palette palette={palette} onAdd={(type) => addStep(type)} disabled={readOnly} />}
        <div className="wf-flow" ref={wrapper} onDragOver={(e) => e.preventDefault()} onDrop={onDrop} data-testid="flow">
          <ReactFlow
            nodes={nodes}
            edges={shownEdges}
            nodeTypes={nodeTypes}
            onNodesChange={handleNodesChange}
            onEdgesChange={handleEdgesChange}
            onConnect={connect}
            onConnectEnd={onConnectEnd}
            isValidConnection={(c) => !problem(c)}
            onSelectionChange={({ nodes: sel }) => setSelectedId(sel.length === 1 ? sel[0].id : null)}
            nodesDraggable={canChange}
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
        {testing && (
          <TestPanel url={`${urls.state}simulate/`} csrfToken={csrfToken} dirty={dirty} palette={palette}
            onTrace={setTrace} onClose={() => { setTesting(false); setTrace(null); }} />
        )}
        {selected && !testing && (
          <ConfigPanel
            node={selected}
            kind={palette[selected.data.stepType]}
            errors={errorsByStep[selected.id] || []}
            readOnly={readOnly}
            nameReadOnly={!canChange}
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
      </div>
    </CanvasContext.Provider>
  );
}
