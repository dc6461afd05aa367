// The two node kinds on the canvas: the trigger and a step (with one output port per branch).
import React, { useContext, useEffect } from 'react';
import { Handle, Position, useUpdateNodeInternals } from '@xyflow/react';
import { NODE_WIDTH, portsFor } from './graph.js';
import { CanvasContext } from './context.js';
import { BranchStats, StepStats, startedIn } from './StatsOverlay.jsx';
import { splitSummary, withShares } from './SplitForm.jsx';

const COUNT_LABELS = [
  ['waiting', 'waiting now'],
  ['passed', 'passed through'],
  ['failed', 'failed here'],
  ['exited', 'exited here'],
];

function Counts({ counts }) {
  if (!counts) return null;
  return (
    <div className="wf-node-counts" aria-label="Live counts">
      {COUNT_LABELS.map(([key, label]) => (
        <span key={key} className={`wf-count wf-count-${key}${counts[key] ? '' : ' wf-count-zero'}`} title={label} data-count={key}>
          {counts[key] || 0} {key}
        </span>
      ))}
    </div>
  );
}

export function TriggerNode({ data }) {
  const { counts, trace, stats } = useContext(CanvasContext);
  const entered = counts?.trigger?.entered ?? 0;
  return (
    <div className={`wf-node wf-node-trigger${traceClass(trace, trace?.order.size ? 0 : null)}`} data-testid="node-trigger">
      <div className="wf-node-type">Trigger</div>
      <div className="wf-node-title">
        {data.manual ? (
          'Manual trigger'
        ) : (
          <>
            When <code>{data.event}</code> is tracked
          </>
        )}
      </div>
      <div className="wf-node-counts">
        {stats ? (
          <span className="wf-count" title="runs started in the chosen period" data-testid="stats-trigger">{startedIn(stats)} started</span>
        ) : (
          <span className="wf-count" title="executions started">{entered} entered</span>
        )}
      </div>
      <Handle type="source" position={Position.Bottom} id="next" className="wf-handle" />
    </div>
  );
}

function summary(type, config) {
  switch (type) {
    case 'send_email': {
      const to = config.recipient?.type === 'CUSTOM' ? ` to ${config.recipient.customEmail || '…'}` : '';
      return config.template ? `Template “${config.template}”${to}` : 'No template chosen';
    }
    case 'delay':
      return config.amount ? `${config.amount} ${config.unit || ''}` : 'No duration set';
    case 'wait_for_event':
      return config.event
        ? `${config.event}${config.timeout ? `, at most ${config.timeout.amount} ${config.timeout.unit}` : ''}`
        : 'No event set';
    case 'condition':
      if (!config.field) return 'No field set';
      if (Array.isArray(config.branches)) {
        const n = config.branches.length;
        return `${config.field}: ${n} branch${n === 1 ? '' : 'es'} + default`;
      }
      return `${config.field} ${config.operator || ''} ${config.value ?? ''}`;
    case 'webhook':
      return config.url ? `${config.method || 'POST'} ${config.url}` : 'No URL set';
    case 'update_contact': {
      const n = Object.keys(config.set || {}).length + (config.unset || []).length;
      return `${n} change${n === 1 ? '' : 's'}${config.subscribed != null ? ', subscription' : ''}`;
    }
    case 'exit':
      return config.reason || 'End the run';
    case 'split':
      return splitSummary(config);
    default:
      return '';
  }
}

// A Test panel run highlights the steps it visited (numbered in order; the one that failed
// in red) and dims the others.
function traceClass(trace, visit, id) {
  if (!trace) return '';
  if (visit == null) return ' wf-untraced';
  return trace.failed?.has(id) ? ' wf-traced wf-trace-failed' : ' wf-traced';
}

export function StepNode({ id, data, selected }) {
  const { palette, counts, errorsByStep, trace, stats } = useContext(CanvasContext);
  const visit = trace?.order.get(id);
  const kind = palette[data.stepType];
  const ports = withShares(data.stepType, data.config, portsFor(kind, data.config));
  const errors = errorsByStep[id] || [];
  const updateNodeInternals = useUpdateNodeInternals();
  const portKey = ports.map((p) => p.id).join(',');
  // Ports come and go with the config (a timeout set, a branch added): React Flow must
  // re-measure the handles, or edges from a new port are not drawn.
  useEffect(() => updateNodeInternals(id), [id, portKey, updateNodeInternals]);
  // Room for every port's label: a multi-branch step grows wider.
  const width = Math.max(NODE_WIDTH, ports.length * 76);
  const at = (i) => `${((i + 1) * 100) / (ports.length + 1)}%`;
  return (
    <div
      className={`wf-node wf-node-step wf-type-${data.stepType}${selected ? ' wf-selected' : ''}${errors.length ? ' wf-has-errors' : ''}${traceClass(trace, visit, id)}`}
      style={width > NODE_WIDTH ? { width } : undefined}
      data-testid={`node-${id}`}
      data-step-key={id}
    >
      <Handle type="target" position={Position.Top} id="in" className="wf-handle" />
      {visit != null && <span className="wf-trace-step" title={`Step ${visit} of the test run`}>{visit}</span>}
      <div className="wf-node-type">{kind ? kind.label : data.stepType}</div>
      <div className="wf-node-title">{data.name || id}</div>
      <div className="wf-node-summary">{summary(data.stepType, data.config || {})}</div>
      {errors.length > 0 && (
        <div className="wf-node-errors" role="alert" data-testid={`errors-${id}`}>
          {errors.map((e, i) => (
            <div key={i}>{e.field ? `${e.field.replace(/^config\./, '')}: ` : ''}{e.message}</div>
          ))}
        </div>
      )}
      {stats ? (
        <>
          <StepStats stepKey={id} figures={stats.steps?.[id]} />
          <BranchStats stepKey={id} ports={ports} branches={stats.steps?.[id]?.branches} goal={stats.goal} />
        </>
      ) : (
        <Counts counts={counts?.[id]} />
      )}
      <div className="wf-ports">
        {ports.map((port, i) => (
          <span key={port.id} className={`wf-port-label wf-port-${port.id}`} style={{ left: at(i) }} title={port.label}>
            {port.label}
          </span>
        ))}
      </div>
      {ports.map((port, i) => (
        <Handle
          key={port.id}
          type="source"
          position={Position.Bottom}
          id={port.id}
          className={`wf-handle wf-handle-${port.id}`}
          style={{ left: at(i) }}
          title={port.label}
          data-testid={`port-${id}-${port.id}`}
        />
      ))}
    </div>
  );
}
