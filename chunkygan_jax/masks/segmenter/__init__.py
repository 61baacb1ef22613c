"""The segment generator G^S (paper sec. 3): soft masks from the image generator's own features.

    S = G^S(X^S) = upsample( blur( mean_e softmax( head_e( phi(X^S) ) * a / T ) ) )    [n, R, R]

phi(X^S): the code X^S, a code of the generator's own segment space (StyleGAN2: W+ [num_ws, w_dim] from
w_avg; the DCGAN: z [z_dim] from its fixed start), goes through the image generator's blocks at a few
middle resolutions (`layers`, `generator.features`); only the blocks up to the largest one run, no
output layer. Each block's activation (filtered with [1, 2, 1] / 4 along both axes where the generator's
transposed convolutions leave a period-2 "checkerboard": `smooth_2x`) is bilinearly upsampled to the mask
resolution h = max(layers),
normalised to unit L2 norm over its channels at every pixel (so every block weighs the same whatever its
channel count or activation scale), and the blocks are concatenated per pixel and divided by
sqrt(#blocks): phi is a unit vector of D = sum of the blocks' channels at each of the h x h pixels.

Heads (per-pixel, shared over pixels):
  - KMeansHead (unsupervised, no annotation): n centroids of a spherical k-means over phi of many random
    samples (`generator.sample_codes`); logits are cosine similarities, T is chosen at fit time so that
    the median sampled pixel gives its nearest centroid 9x the weight of the runner-up.
  - MLPHead (DatasetGAN-style): an ensemble of small per-pixel MLPs trained with optax on generated
    samples with label maps; the members' softmaxes are averaged.
The per-pixel probabilities at h are blurred with a Gaussian of std h/16 (`finish_masks`: one segment
per region, not islands) and bilinearly upsampled to the generator's resolution R; both are convex
combinations, so the masks still sum to 1.

Annealing (a, `Segmenter.hardness`): during an inversion the logits are multiplied by a factor a that grows
geometrically from 1 at the first step to `hardening` (10/3) at half the steps and stays there: soft masks
while X^S finds its place, then each image code owns its segment. A finished result's masks, a frozen
segmenter's and an edit's are the final ones (a = hardening); `with_hardening(1.0)` turns it off.

`Segmenter` is an annealing mask source (`anneals = True`; the protocol is in masks/sources.py):
init(n) -> {"segment_code": X^S} ({} when frozen), masks(params, progress) -> [n, R, R]. It is a pytree
(generator and head are leaves, the layer choice is static), so an inversion passes it to its jitted step
as an argument (never closed over: its weights are not baked into the program as constants) and
optimises X^S with the segment codes. Because X^S lives in the generator's own space, an edit direction
can move it on request (`masks_for_code`; edits keep it by default).

Checkpoints (trained heads and the k-means cache) are directories with `head.npz` and `segmenter.json`
(format version, head kind, n, layers, temperature, fit/training settings and the generator's identity:
a sha256 of its config and parameters). A head only loads onto the generator it was fitted on.

Modules (chunkygan_jax/masks/segmenter/): features.py (phi), heads.py (heads and the `Segmenter` mask
source), store.py (checkpoints), kmeans.py (the unsupervised head and its cache), mlp.py (the trained head
and annotations).
"""

from ...generators.protocol import fingerprint as generator_fingerprint
from ...generators.stylegan2 import sample_ws
from .features import (DEFAULT_NOISE_MODE, code_shape, default_layers, feature_dim, initial_code, pixel_features,
                       resolve_layers)
from .heads import (HARDEN_UNTIL, HARDENING, MASK_SMOOTHING, KMeansHead, MLPHead, Segmenter, finish_masks,
                    head_masks, init_mlp, make_segmenter)
from .kmeans import (KMEANS_MEDIAN_ODDS, KMeansSettings, collect_features, fit_kmeans, kmeans_segmenter,
                     kmeans_temperature, segmenter_cache_dir, spherical_kmeans)
from .mlp import LATENT_KINDS, MLPSettings, label_maps, load_annotations, read_latent, train_mlp, train_segmenter
from .store import (FORMAT_VERSION, HEAD_KINDS, HEAD_NAME, RECORD_NAME, load_segmenter, read_segmenter_record,
                    save_segmenter, segmenter_identity)
