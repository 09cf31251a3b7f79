// ES module face of the UMD React that index.html loaded (the host app's React).
const React = globalThis.React;
export default React;
export const {
  Children, Component, Fragment, StrictMode, createContext, createElement, forwardRef, memo,
  useCallback, useContext, useEffect, useLayoutEffect, useMemo, useReducer, useRef, useState,
  useSyncExternalStore,
} = React;
