// The digit classifier: the feature network for evaluation (FID on its penultimate features,
// and the share of samples classified as the digit that was asked for). A small conv net,
// trained by qdm on the training split.
import { nn, Tensor, avgPool2d, relu, mean } from '@qdm/core';

export const FEATURE_DIM = 64;

export class DigitClassifier extends nn.Module {
  readonly conv1: nn.Conv2d;
  readonly conv2: nn.Conv2d;
  readonly conv3: nn.Conv2d;
  readonly fc1: nn.Linear;
  readonly fc2: nn.Linear;
  constructor() {
    super();
    this.conv1 = this.registerModule('conv1', new nn.Conv2d(1, 16, 3, { padding: 1 }));
    this.conv2 = this.registerModule('conv2', new nn.Conv2d(16, 32, 3, { padding: 1 }));
    this.conv3 = this.registerModule('conv3', new nn.Conv2d(32, 64, 3, { padding: 1 }));
    this.fc1 = this.registerModule('fc1', new nn.Linear(64, FEATURE_DIM));
    this.fc2 = this.registerModule('fc2', new nn.Linear(FEATURE_DIM, 10));
  }
  /** Penultimate features [B, 64] of images in [-1, 1], shape [B, 1, 28, 28]. */
  features(x: Tensor): Tensor {
    let h = avgPool2d(relu(this.conv1.call(x)), 2);   // 14
    h = avgPool2d(relu(this.conv2.call(h)), 2);       // 7
    h = mean(relu(this.conv3.call(h)), [2, 3]);      // global average: [B, 64]
    return relu(this.fc1.call(h));
  }
  forward(x: Tensor): Tensor { return this.fc2.call(this.features(x)); }
}
