// Pure graph helpers: document <-> React Flow nodes/edges, the connection rules the server
// enforces (graph.graph_validate), and the dagre "tidy up" layout. No React in here.
import dagre from '@dagrejs/dagre';

export const TRIGGER = 'trigger';
export const NODE_WIDTH = 230;
export const NODE_HEIGHT = 96;

// The ports of a step: the palette's branches, minus those whose required config field is
// unset (e.g. Wait for Event's `timeout`; the server sends that rule as `branch_requires`).
export function branchesFor(kind, config) {
  if (!kind) return [];
  const requires = kind.branch_requires || {};
  return kind.branches.filter((branch) => {
    const field = requires[branch];
    return !field || (config && config[field] != null && config[field] !== '');
  });
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
    data: { branch },
  };
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
      data: { event: workflow.trigger_event },
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
      return `${kind.label} has no “${branch}” output${
        branch === 'timeout' ? ' until a timeout is set' : ''
      }.`;
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

export function tidy(nodes, edges) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 50, ranksep: 70 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) {
    g.setNode(n.id, { width: n.measured?.width || NODE_WIDTH, height: n.measured?.height || NODE_HEIGHT });
  }
  for (const e of edges) g.setEdge(e.source, e.target);
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
