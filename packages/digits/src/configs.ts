// The embedded models' configurations. The U-Net is a diffusers UNet2DModel config (so the
// shipped folder loads in diffusers too): 28x28 single-channel digits, class-conditional with
// an extra "null" class (index 10) used for classifier-free guidance by label dropout.

export const NULL_CLASS = 10;
/**
 * The classifier-free guidance scale the shipped U-Net samples best at (docs/digits.md: a sweep
 * of 1 to 4 on 50 samples; 1.25 to 1.5 gives the best FID and class accuracy, stronger guidance
 * overshoots into malformed strokes and loses the class).
 */
export const DIGITS_GUIDANCE = 1.5;

export const DIGITS_UNET_CONFIG = {
  _class_name: 'UNet2DModel',
  sample_size: 28,
  in_channels: 1,
  out_channels: 1,
  center_input_sample: false,
  time_embedding_type: 'positional',
  freq_shift: 0,
  flip_sin_to_cos: true,
  down_block_types: ['DownBlock2D', 'AttnDownBlock2D'],
  up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
  block_out_channels: [32, 64],
  layers_per_block: 1,
  mid_block_scale_factor: 1,
  downsample_padding: 1,
  downsample_type: 'conv',
  upsample_type: 'conv',
  dropout: 0.0,
  act_fn: 'silu',
  attention_head_dim: 32,
  norm_num_groups: 8,
  norm_eps: 1e-5,
  resnet_time_scale_shift: 'default',
  add_attention: true,
  class_embed_type: null,
  num_class_embeds: 11,
};

export const DIGITS_SCHEDULER_CONFIG = {
  _class_name: 'DDPMScheduler',
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  prediction_type: 'epsilon',
  clip_sample: true,
  clip_sample_range: 1.0,
  variance_type: 'fixed_small',
  timestep_spacing: 'leading',
  steps_offset: 0,
};
