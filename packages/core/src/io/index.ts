// File input/output: atomic writes and the safetensors format.
export { writeFileAtomic, writeFileAtomicChunks } from './atomic.js';
export {
  SafetensorsError, readSafetensorsHeader, readSafetensorsTensor, loadSafetensors, saveSafetensors,
  type SafetensorsEntry, type SafetensorsHeader,
} from './safetensors.js';
