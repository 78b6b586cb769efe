// Binds a ViewerController to a host element for the lifetime of a component.
import { type RefObject, useEffect, useRef, useState, useSyncExternalStore } from "react";
import { Niivue } from "@niivue/niivue";
import { INITIAL_SNAPSHOT, NIIVUE_OPTIONS, ViewerController, type ViewerSnapshot } from "./ViewerController";

const noSubscription = () => () => undefined;
const initialSnapshot = () => INITIAL_SNAPSHOT;

/**
 * A controller for the component's lifetime. `niivueOptions` add to or replace the viewer's
 * NiiVue defaults (the compare page lays its three slices out in a row); read once, on mount.
 */
export function useViewerController(niivueOptions?: Record<string, unknown>): {
  hostRef: RefObject<HTMLDivElement | null>;
  controller: ViewerController | null;
  snapshot: ViewerSnapshot;
} {
  const hostRef = useRef<HTMLDivElement>(null);
  // The options of the first render: the controller is made once, on mount.
  const initialOptions = useRef(niivueOptions);
  const [controller, setController] = useState<ViewerController | null>(null);

  useEffect(() => {
    const host = hostRef.current;
    if (!host) return;
    const options = initialOptions.current;
    const created = options
      ? new ViewerController(() => new Niivue({ ...NIIVUE_OPTIONS, ...options }))
      : new ViewerController();
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
