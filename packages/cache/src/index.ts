// @qdm/cache: step-caching policies for U-Nets (DeepCache). Arrives with its issue.
export const PACKAGE = '@qdm/cache';
