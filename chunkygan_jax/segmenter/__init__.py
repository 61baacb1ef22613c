"""The segment generator G^S (paper sec. 3): soft masks from the image generator's own features.

    S = G^S(X^S) = upsample( mean_e softmax( head_e( phi(X^S) ) / T ) )        [n, R, R]

phi(X^S): the code X^S (a W+ code [num_ws, w_dim], starting at w_avg) goes through the image generator's
synthesis blocks at a few middle resolutions (`layers`); only the blocks up to the largest one run and no
ToRGB. Each block's activation is bilinearly upsampled to the mask resolution h = max(layers),
normalised to unit L2 norm over its channels at every pixel (so every block weighs the same whatever its
channel count or activation scale), and the blocks are concatenated per pixel and divided by
sqrt(#blocks): phi is a unit vector of D = sum of the blocks' channels at each of the h x h pixels.

Heads (per-pixel, shared over pixels):
  - KMeansHead (unsupervised, no annotation): n centroids of a spherical k-means over phi of many random
    samples (z -> mapping -> synthesis); logits are cosine similarities, T is chosen at fit time so that
    the median sampled pixel gives its nearest centroid 9x the weight of the runner-up.
  - MLPHead (DatasetGAN-style): an ensemble of small per-pixel MLPs trained with optax on generated
    samples with label maps; the members' softmaxes are averaged.
The per-pixel probabilities at h are bilinearly upsampled to the generator's resolution R; bilinear
weights are convex, so the masks still sum to 1.

`Segmenter` is a mask source (see masks.py): init(n) -> {"segment_code": X^S} ({} when frozen),
masks(params) -> [n, R, R]; it is a pytree (generator and head are leaves, the layer choice is static), so
an inversion closes over it in jit and optimises X^S with the segment codes. Because X^S lives in the
generator's own W+ space, an edit direction can move it (`masks_for_code`) so that the segments follow.

Checkpoints (trained heads and the k-means cache) are directories with `head.npz` and `segmenter.json`
(format version, head kind, n, layers, temperature, fit/training settings and the generator's identity:
a sha256 of its config and parameters). A head only loads onto the generator it was fitted on.

Modules: features.py (phi), heads.py (heads and the `Segmenter` mask source), store.py (checkpoints),
kmeans.py (the unsupervised head and its cache), mlp.py (the trained head and annotations).
"""

from ..generators.protocol import fingerprint as generator_fingerprint
from ..generators.stylegan2 import sample_ws
from ..masks import neighbour_agreement
from .features import DEFAULT_NOISE_MODE, default_layers, feature_dim, pixel_features, resolve_layers
from .heads import KMeansHead, MLPHead, Segmenter, head_masks, init_mlp, make_segmenter
from .kmeans import (KMEANS_MEDIAN_ODDS, KMeansSettings, collect_features, fit_kmeans, kmeans_segmenter,
                     kmeans_temperature, segmenter_cache_dir, spherical_kmeans)
from .mlp import LATENT_KINDS, MLPSettings, label_maps, load_annotations, read_latent, train_mlp, train_segmenter
from .store import (FORMAT_VERSION, HEAD_KINDS, HEAD_NAME, RECORD_NAME, load_segmenter, read_segmenter_record,
                    save_segmenter)
