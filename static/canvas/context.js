import { createContext } from 'react';

// Read-only data every node needs (palette, live counts, server errors), passed down without
// putting it into each node's data.
export const CanvasContext = createContext({ palette: {}, counts: {}, errorsByStep: {} });
