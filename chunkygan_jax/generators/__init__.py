"""Image generators G^I."""

from .stylegan2 import StyleGAN2, StyleGAN2Config, config_from_params, ffhq_config, random_params, sample_ws
from .statedict import compute_w_avg, stylegan2_from_nvidia, stylegan2_from_rosinality
from .dcgan import DCGAN
from .protocol import fingerprint
