// The U-Net seen as DeepCache sees it: a down path of layers each producing one skip feature,
// and an up path of layers each consuming one. Found by diffusers' attribute names
// (down_blocks.i.{resnets,attentions,downsamplers}, up_blocks.k.{resnets,attentions,upsamplers},
// mid_block), so any model with diffusers' structure works, whatever its block types.
import { ArgumentError, type Module, nn } from '@qdm/core';

/** One down-path layer: resnet j (+ attention j) of a block, or the block's downsampler. */
export interface DownLayer { block: number; modules: Module[]; skip: number; name: string }
/** One up-path layer: resnet j (+ attention j) of an up block; `skip` is the feature it consumes. */
export interface UpLayer { block: number; index: number; modules: Module[]; skip: number; name: string }

export interface UNetLayers {
  downBlocks: Module[];
  upBlocks: Module[];
  mid: Module | null;
  down: DownLayer[];
  up: UpLayer[];
  /** Upsampler of each up block (null where the block has none). */
  upsamplers: Array<Module | null>;
  /** Number of skip features (conv_in's output is skip 0). */
  numSkips: number;
}

function child(m: Module, name: string): Module | null {
  for (const [k, c] of m.children()) if (k === name) return c;
  return null;
}
function list(m: Module, name: string): Module[] {
  const l = child(m, name);
  return l instanceof nn.ModuleList ? [...l] : [];
}

export function unetLayers(unet: Module): UNetLayers {
  const downList = child(unet, 'down_blocks'), upList = child(unet, 'up_blocks');
  if (!(downList instanceof nn.ModuleList) || !(upList instanceof nn.ModuleList)) {
    throw new ArgumentError(`DeepCache: ${unet.constructor.name} has no down_blocks/up_blocks (a diffusers-structured U-Net is needed)`);
  }
  const downBlocks = [...downList], upBlocks = [...upList];
  const down: DownLayer[] = [];
  let skip = 1;
  downBlocks.forEach((b, i) => {
    const res = list(b, 'resnets'), att = list(b, 'attentions');
    res.forEach((r, j) => down.push({ block: i, modules: att[j] ? [r, att[j]!] : [r], skip: skip++, name: `down_blocks.${i}.resnets.${j}${att[j] ? '+attentions' : ''}` }));
    for (const d of list(b, 'downsamplers')) down.push({ block: i, modules: [d], skip: skip++, name: `down_blocks.${i}.downsamplers` });
  });
  const numSkips = skip;
  const up: UpLayer[] = [];
  const upsamplers: Array<Module | null> = [];
  let consumed = 0;
  upBlocks.forEach((b, k) => {
    const res = list(b, 'resnets'), att = list(b, 'attentions');
    res.forEach((r, j) => up.push({ block: k, index: j, modules: att[j] ? [r, att[j]!] : [r], skip: numSkips - 1 - consumed++, name: `up_blocks.${k}.resnets.${j}${att[j] ? '+attentions' : ''}` }));
    upsamplers.push(list(b, 'upsamplers')[0] ?? null);
  });
  if (consumed !== numSkips) throw new ArgumentError(`DeepCache: the up path consumes ${consumed} skip features but the down path makes ${numSkips}`);
  return { downBlocks, upBlocks, mid: child(unet, 'mid_block'), down, up, upsamplers, numSkips };
}

/**
 * Our branch number from the reference plug-in's `cache_branch_id` (METHODS.md section 4.1).
 * Ours is the index of the deepest skip feature recomputed on a retrieval step (0 = conv_in's
 * output). The helper's id is 3 * block + layer and keeps the down layers before (block, layer)
 * fresh, so its id 0 is our branch 0; on SD-style U-Nets (three layers per block) the two agree.
 */
export function branchFromHelperId(unet: Module, cacheBranchId: number): number {
  const { down } = unetLayers(unet);
  const block = Math.floor(cacheBranchId / 3), layer = cacheBranchId % 3;
  // The helper keeps down layers with index < layer of the chosen block fresh: the deepest
  // fresh skip is the one before (block, layer), i.e. conv_in's when both are 0.
  const before = down.filter((d) => d.block < block || (d.block === block && down.filter((e) => e.block === block).indexOf(d) < layer));
  return before.length ? before[before.length - 1]!.skip : 0;
}

/** The experiment pipelines' (cache_layer_id, cache_block_id): down block L's sub-layer K is the last fresh one. */
export function branchFromPipeline(unet: Module, cacheLayerId: number, cacheBlockId: number): number {
  const { down } = unetLayers(unet);
  const inBlock = down.filter((d) => d.block === cacheLayerId);
  const layer = inBlock[cacheBlockId];
  if (!layer) throw new ArgumentError(`DeepCache: down block ${cacheLayerId} has no layer ${cacheBlockId}`);
  return layer.skip;
}
