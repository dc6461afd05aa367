// The canvas's two endpoints (workflows_app/admin_views.py).
export async function loadState(url) {
  const response = await fetch(url, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
  if (!response.ok) throw new Error(`Loading the workflow failed (HTTP ${response.status}).`);
  return response.json();
}

export async function saveGraph(url, csrfToken, graph, graphVersion) {
  const response = await fetch(url, {
    method: 'PUT',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRFToken': csrfToken },
    body: JSON.stringify({ graph, graph_version: graphVersion }),
  });
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = { message: `Saving failed (HTTP ${response.status}).` };
  }
  return { status: response.status, body };
}

export async function loadFields(url) {
  const response = await fetch(url, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
  if (!response.ok) return [];
  return (await response.json()).fields || [];
}

// The Test panel's dry run (workflows_app/admin_simulate.py): runs the saved graph in virtual
// time and sends nothing. Returns {status, body}; a body that is not JSON becomes a message.
export async function simulate(url, csrfToken, request) {
  const response = await fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRFToken': csrfToken },
    body: JSON.stringify(request),
  });
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = { message: `The test did not run (HTTP ${response.status}).` };
  }
  return { status: response.status, body };
}

// The stats overlay's figures (workflows_app/admin_stats.py) for {from, to, goal}; empty
// values are left out. A refusal throws its message, with `field` naming the bad parameter.
export async function loadStats(url, params, signal) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v));
  const response = await fetch(`${url}?${query}`, {
    headers: { Accept: 'application/json' },
    credentials: 'same-origin',
    signal,
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: the status says what went wrong */
  }
  if (!response.ok) {
    const error = new Error(body?.message || `Loading the stats failed (HTTP ${response.status}).`);
    error.field = body?.field || body?.errors?.[0]?.field;
    throw error;
  }
  if (!body) throw new Error('Loading the stats failed: the answer was not JSON.');
  return body;
}
