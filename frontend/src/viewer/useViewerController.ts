// Binds a ViewerController to a host element for the lifetime of a component.
import { type RefObject, useEffect, useRef, useState, useSyncExternalStore } from "react";
import { INITIAL_SNAPSHOT, ViewerController, type ViewerSnapshot } from "./ViewerController";

const noSubscription = () => () => undefined;
const initialSnapshot = () => INITIAL_SNAPSHOT;

export function useViewerController(): {
  hostRef: RefObject<HTMLDivElement | null>;
  controller: ViewerController | null;
  snapshot: ViewerSnapshot;
} {
  const hostRef = useRef<HTMLDivElement>(null);
  const [controller, setController] = useState<ViewerController | null>(null);

  useEffect(() => {
    const host = hostRef.current;
    if (!host) return;
    const created = new ViewerController();
    created.mount(host);
    setController(created);
    return () => {
      // Frees the WebGL context: a page can hold only about 16.
      created.dispose();
      setController(null);
    };
  }, []);

  const snapshot = useSyncExternalStore(
    controller?.subscribe ?? noSubscription,
    controller?.getSnapshot ?? initialSnapshot,
  );
  return { hostRef, controller, snapshot };
}
