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
