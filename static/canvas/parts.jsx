// The canvas's chrome around the graph: the palette, the lock banner, full screen.
import React, { useEffect, useState } from 'react';

export function Palette({ palette, onAdd, disabled }) {
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

export function LockBanner({ lock, executionsUrl, cancelAllUrl, canChange }) {
  if (!lock?.locked) return null;
  return (
    <div className="wf-banner wf-banner-lock" role="status" data-testid="lock-banner">
      <strong>Locked: {lock.active} active execution{lock.active === 1 ? '' : 's'}.</strong>{' '}
      {canChange && (
        <>You can still rename steps and move them (that changes nothing a run depends on); adding, removing,
        connecting and configuring steps waits.{' '}</>
      )}
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

// Full screen: the editor takes the whole window (a class on its root, so the admin's light
// and dark themes still apply); Esc or the button leaves. Returns [full, setFull].
export function useFullScreen(flow) {
  const [full, setFull] = useState(false);
  useEffect(() => {
    document.body.classList.toggle('wf-fullscreen-open', full);
    const refit = setTimeout(() => flow.fitView({ padding: 0.15, duration: 150, maxZoom: 1 }), 60);
    if (!full) return () => clearTimeout(refit);
    const leave = (e) => {
      if (e.key === 'Escape') setFull(false);
    };
    window.addEventListener('keydown', leave);
    return () => {
      clearTimeout(refit);
      window.removeEventListener('keydown', leave);
      document.body.classList.remove('wf-fullscreen-open');
    };
  }, [full, flow]);
  return [full, setFull];
}
