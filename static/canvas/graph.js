// Pure graph helpers: document <-> React Flow nodes/edges, the connection rules the server
// enforces (graph.graph_validate), and the dagre "tidy up" layout. No React in here.
import dagre from '@dagrejs/dagre';

export const TRIGGER = 'trigger';
export const NODE_WIDTH = 230;
export const NODE_HEIGHT = 96;

// The ports of a step, from the step type's own rules (its `describe()`), never its name:
// - `branch_list` {field, id, label, when, extra}: while the config matches `when` (e.g.
//   {mode: "multi"}), one port per item of config[field] (named by item[id], shown as
//   item[label]) plus the `extra` ports (e.g. "default");
// - otherwise the type's `branches`, minus those whose `branch_requires` field is unset (Wait
//   for Event's `timeout`), by the server's rule (`isSet`).
// Returns [{id, label}], in order; ids are unique and non-empty.
export function portsFor(kind, config) {
  if (!kind) return [];
  const cfg = config || {};
  const list = kind.branch_list || {};
  if (list.field && listApplies(list, cfg)) {
    const ports = [];
    const seen = new Set();
    for (const item of Array.isArray(cfg[list.field]) ? cfg[list.field] : []) {
      const id = item && item[list.id || 'id'];
      if (typeof id !== 'string' || !id || seen.has(id)) continue;
      seen.add(id);
      const label = item[list.label || 'name'];
      ports.push({ id, label: typeof label === 'string' && label ? label : id });
    }
    for (const id of list.extra || []) {
      if (!seen.has(id)) {
        seen.add(id);
        ports.push({ id, label: id });
      }
    }
    return ports;
  }
  const requires = kind.branch_requires || {};
  return (kind.branches || [])
    .filter((branch) => {
      const field = requires[branch];
      return !field || isSet(cfg[field]);
    })
    .map((id) => ({ id, label: id }));
}

// Whether a `branch_requires` field is set, by the rule the server applies (StepType.
// branches_for reads the field with Python truthiness): false, 0, '', null, [] and {} are
// unset. Plunk's `{eventName, timeout: 0}` has no timeout; `{fallback: false}` no fallback.
export function isSet(value) {
  if (Array.isArray(value)) return value.length > 0;
  if (value && typeof value === 'object') return Object.keys(value).length > 0;
  return Boolean(value);
}

function listApplies(list, config) {
  return Object.entries(list.when || {}).every(([field, value]) => config[field] === value);
}

// Just the port ids (what transitions name as their branch).
export function branchesFor(kind, config) {
  return portsFor(kind, config).map((p) => p.id);
}

// What an edge shows: its branch's label ("next", the plain way on, shows nothing).
export function edgeLabel(branch, ports) {
  if (!branch || branch === 'next') return undefined;
  const port = ports && ports.find((p) => p.id === branch);
  return port ? port.label : branch;
}

export function edgeId(source, branch) {
  return `${source}:${branch}`;
}

export function makeEdge(source, branch, target) {
  return {
    id: edgeId(source, branch),
    source,
    sourceHandle: branch,
    target,
    targetHandle: 'in',
    label: branch === 'next' ? undefined : branch,
    labelBgPadding: [4, 2],
    labelBgBorderRadius: 3,
    data: { branch },
  };
}

// Steps that have no position of their own (a file written without them, e.g. from Plunk,
// stores them at 0,0; so do steps added through the API without one) sit on top of each other:
// when any two steps share a position, the canvas lays the graph out as it opens.
export function needsLayout(document) {
  const seen = new Set();
  for (const s of document.steps || []) {
    const at = `${Number(s.position?.x) || 0},${Number(s.position?.y) || 0}`;
    if (seen.has(at)) return true;
    seen.add(at);
  }
  return false;
}

// A branch id from a branch name: lowercase words joined by "-", unique among `taken`.
export function slugId(name, taken, fallback = 'branch') {
  const base =
    String(name || '')
      .normalize('NFKD')
      .replace(/[\u0300-\u036f]/g, '')
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 40) || fallback;
  let id = base;
  let i = 2;
  while (taken.includes(id)) {
    id = `${base}-${i}`;
    i += 1;
  }
  return id;
}

// The trigger has no stored position: it sits above the step it leads to.
function triggerPosition(document) {
  const entry = document.transitions.find((t) => t.from === TRIGGER);
  const step = entry && document.steps.find((s) => s.key === entry.to);
  if (!step) return { x: 0, y: -160 };
  return { x: step.position?.x || 0, y: (step.position?.y || 0) - 160 };
}

export function documentToFlow(document, workflow) {
  const nodes = [
    {
      id: TRIGGER,
      type: 'trigger',
      position: triggerPosition(document),
      deletable: false,
      data: { event: workflow.trigger_event, manual: workflow.trigger_type === 'manual' },
    },
  ];
  for (const step of document.steps) {
    nodes.push({
      id: step.key,
      type: 'step',
      position: { x: step.position?.x || 0, y: step.position?.y || 0 },
      data: { stepType: step.type, name: step.name || '', config: step.config || {} },
    });
  }
  const edges = document.transitions.map((t) => makeEdge(t.from, t.branch || 'next', t.to));
  return { nodes, edges };
}

export function flowToDocument(nodes, edges) {
  const steps = nodes
    .filter((n) => n.type === 'step')
    .map((n) => ({
      key: n.id,
      type: n.data.stepType,
      name: n.data.name || '',
      config: n.data.config || {},
      position: { x: Math.round(n.position.x), y: Math.round(n.position.y) },
    }));
  const transitions = edges.map((e) => ({
    from: e.source,
    to: e.target,
    branch: e.sourceHandle || 'next',
  }));
  return { steps, transitions };
}

function reaches(edges, from, to) {
  // Is there a path from `from` to `to`? Returns it, or null.
  const out = new Map();
  for (const e of edges) {
    if (!out.has(e.source)) out.set(e.source, []);
    out.get(e.source).push(e.target);
  }
  const stack = [[from]];
  const seen = new Set([from]);
  while (stack.length) {
    const path = stack.pop();
    const last = path[path.length - 1];
    if (last === to) return path;
    for (const next of out.get(last) || []) {
      if (!seen.has(next)) {
        seen.add(next);
        stack.push([...path, next]);
      }
    }
  }
  return null;
}

// Why the server would refuse this connection, or null when it is fine.
export function connectionProblem({ source, sourceHandle, target }, nodes, edges, palette) {
  const name = (id) => {
    if (id === TRIGGER) return 'the trigger';
    const node = nodes.find((n) => n.id === id);
    return node ? `“${node.data.name || id}”` : id;
  };
  const branch = sourceHandle || 'next';
  if (target === TRIGGER) return 'Nothing can lead back into the trigger.';
  if (source === target) return 'A step cannot lead to itself.';
  const from = nodes.find((n) => n.id === source);
  if (from && from.type === 'step') {
    const kind = palette[from.data.stepType];
    const ports = branchesFor(kind, from.data.config);
    if (!ports.length) return `${kind.label} ends the run: it can have no outgoing connection.`;
    if (!ports.includes(branch)) {
      const needs = kind.branch_requires?.[branch];
      return `${kind.label} has no “${branch}” output${needs ? ` until its ${needs} is set` : ''}.`;
    }
  }
  const taken = edges.find((e) => e.source === source && (e.sourceHandle || 'next') === branch);
  if (taken) {
    const port = source === TRIGGER ? 'The trigger' : `The “${branch}” output of ${name(source)}`;
    return `${port} already leads to ${name(taken.target)}. Delete that connection first: each output leads to one step.`;
  }
  const path = reaches(edges, target, source);
  if (path) {
    const loop = [...path, target].map(name).join(' → ');
    return `That would make a loop (${loop}). Runs always move forward.`;
  }
  return null;
}

// An edge's port's place on its node (for tidy).
export function portOrder(nodes, palette) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  return (edge) => {
    const node = byId.get(edge.source);
    if (!node || node.type !== 'step') return 0;
    return branchesFor(palette[node.data.stepType], node.data.config).indexOf(edge.sourceHandle || 'next');
  };
}

// Lays the graph out top to bottom. `portIndex(edge)` (the edge's port's place on its node)
// keeps each step's children in the order of its ports, left to right, so that edges do not
// cross under a step with several outputs.
export function tidy(nodes, edges, portIndex = () => 0) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 50, ranksep: 70 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) {
    g.setNode(n.id, { width: n.measured?.width || NODE_WIDTH, height: n.measured?.height || NODE_HEIGHT });
  }
  // dagre places the children of a node in the reverse of the order their edges were added.
  const sources = [...new Set(edges.map((e) => e.source))];
  const ordered = sources.flatMap((source) =>
    edges.filter((e) => e.source === source).sort((a, b) => portIndex(b) - portIndex(a)),
  );
  for (const e of ordered) g.setEdge(e.source, e.target);
  dagre.layout(g);
  return nodes.map((n) => {
    const p = g.node(n.id);
    const w = n.measured?.width || NODE_WIDTH;
    const h = n.measured?.height || NODE_HEIGHT;
    return { ...n, position: { x: Math.round(p.x - w / 2), y: Math.round(p.y - h / 2) } };
  });
}

export function newKey(type, nodes) {
  const base = type.replace(/[^a-z0-9_-]/g, '-');
  let i = 1;
  while (nodes.some((n) => n.id === `${base}-${i}`)) i += 1;
  return `${base}-${i}`;
}

// Config a freshly added step starts with: the schema's defaults (the server's own values).
export function defaultConfig(kind) {
  const props = kind.config_schema?.properties || {};
  const config = {};
  for (const [key, prop] of Object.entries(props)) {
    if (prop.default !== undefined && prop.default !== null) config[key] = prop.default;
  }
  return config;
}
