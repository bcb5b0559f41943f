// @qdm/distill: this package's methods arrive with their own issues (see docs/architecture.md).
// It exists from the start so that the workspace, its dependencies and its build are fixed.
export const PACKAGE = '@qdm/distill';
