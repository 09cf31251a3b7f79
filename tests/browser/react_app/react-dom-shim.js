const ReactDOM = globalThis.ReactDOM;
export default ReactDOM;
export const { createRoot, hydrateRoot } = ReactDOM;
