// The canvas's one entry: mounts the React Flow island into the workflow's admin page.
import React from 'react';
import { createRoot } from 'react-dom/client';
import { ReactFlowProvider } from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import './canvas.css';
import { App } from './App.jsx';

function mount() {
  const root = document.getElementById('workflow-canvas');
  if (!root) return;
  const urls = {
    state: root.dataset.stateUrl,
    fields: root.dataset.fieldsUrl,
    executions: root.dataset.executionsUrl,
    cancelAll: root.dataset.cancelAllUrl || '',
  };
  root.classList.add('wf-mounted');
  createRoot(root).render(
    <ReactFlowProvider>
      <App urls={urls} csrfToken={root.dataset.csrfToken} />
    </ReactFlowProvider>,
  );
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mount);
else mount();
