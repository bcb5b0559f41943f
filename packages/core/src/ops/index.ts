// Every op module registers its Tensor methods on import; this file imports them all and
// wires the autograd engine's late-bound helpers.
import { autogradHooks } from '../autograd.js';
import { onesLike } from './creation.js';
import { add } from './elementwise.js';
import { clone } from './shape.js';

export * from './creation.js';
export * from './shape.js';
export * from './elementwise.js';
export * from './reduce.js';
export * from './matmul.js';
export * from './nn.js';
export * from './indexing.js';
export * from './loss.js';
export { empty, emptyUninitialized, broadcastShapes } from './util.js';

autogradHooks.onesLike = (t) => onesLike(t);
autogradHooks.add = (a, b) => add(a, b);
autogradHooks.clone = (t) => { const c = clone(t); c.gradFn = null; c.requiresGrad = false; return c; };
