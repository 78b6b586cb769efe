// Types of the parts of @niivue/dcm2niix (which ships none) that upload/convert.ts uses.
declare module "@niivue/dcm2niix" {
  interface Processor {
    bids(value: "y" | "n" | "o"): Processor;
    bidsAnonymize(value: "y" | "n"): Processor;
    gzip(value: "y" | "o" | "i" | "n" | "3"): Processor;
    filenameformat(value: string): Processor;
    run(): Promise<File[]>;
  }
  export class Dcm2niix {
    worker: Worker | null;
    init(): Promise<boolean>;
    input(files: File[] | FileList): Processor;
  }
}
