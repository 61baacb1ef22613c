"""Editing projected images, for every generator of the protocol: direction edits (StyleGAN2 W/W+, the
demo DCGAN's z), StyleSpace channels (StyleGAN2 only), local layered edits, hole filling, Poisson
compositing, and directions the generator yields by itself (GANSpace PCA, `pca:K`).

Latent edits are pure functions of the latent pytree ({"codes": ..., maybe "segment_code"}) and work under
jit (strengths may be traced; layer ranges, channels and segment choices are static):

  - `apply_direction`: codes[s, lo:hi] += strength * d[lo:hi] for the chosen segments s, as the authors'
    tool does: W codes [n, 1, w_dim] are first broadcast to W+ [n, num_ws, w_dim]. A z-space generator's
    codes [n, z_dim] take directions of shape (z_dim,) and have no layers. The segment generator's
    code X^S stays (the rule of every global edit: docs/editing.md); `segment_code=True` moves it too.
  - `apply_style_edits`: s[layer][s, channel] += strength, a raw additive offset in StyleSpace (the
    generator's style order, ToRGB layers included); W/W+ codes are converted to S first.
  - `apply_edits`: a list of `DirectionEdit` / `StyleEdit`, directions first, then style edits (the tool's
    order; once codes are in S there is no way back to W).
  - `resolve_direction`: 'pca:K', a .npy file or an array -> the direction array (one resolver for every
    front end). `fit_direction` / `direction_from_labels`: a direction fitted to labelled samples
    (an ordinary .npy once saved). `principal_directions` / `write_directions`: the generator's own principal directions,
    computed once and cached (strength 1 = one standard deviation).
Rendering (render.py, the one path from codes to images, through one jitted program): `render_segments`
draws one image per code (with a tuned result's weights and its optimised noise: `result_drawer`),
`render` recomposes an image from (edited) latents and masks (paper eq. 1 and 3); `edit_result` edits a
saved or fresh `InversionResult` and returns a new one (so edits can be chained).

Region edits (paper section 5):
  - `local_edit`: project ONE segment into a user region (static mask = 1 - region, eq. 3), edit its
    code, and composite  region * G(X') + (1 - region) * input. The output becomes the input of the next
    edit (sequential layered edits, Fig. 9). `reedit` edits the same projection again (a sweep).
  - `fill_holes`: refine an edited code on a correction mask (Fig. 10): a single-segment projection
    starting from the edited code, with the target image fixed outside the correction region, whose
    generated content then fills that region.
Region projections with the same settings reuse one compiled projector (interactive editing).

The latent space is read from the codes themselves, matched against the generator's spaces through the
protocol (`initial_codes`): a dict of layers is S, [n, 1, w_dim] is W, [n, num_ws, w_dim] is W+, and
[n, z_dim] is z.

Modules: spaces.py (latent spaces, the direction space, parsing), directions.py (resolving directions),
principal.py (GANSpace directions, their cache and folders), labelled.py (directions fitted to labelled
samples, InterFaceGAN-style: logistic regression, held-out accuracy, .npy plus a JSON sidecar),
localized.py (StyleSpace channels whose effect lies inside a region: `localized_channels`), edits.py (edit specs,
latent edits, edit_result), render.py (drawing codes, recomposing), region.py (local edits, hole filling), sheets.py (sheets to look
at), saved.py (editing a saved result as bin/edit does: sweeps, side-by-sides).
"""

from .directions import as_direction, load_direction, resolve_direction
from .edits import (DirectionEdit, StyleEdit, apply_direction, apply_edits, apply_style_edits, describe,
                    edit_list, edit_result, parse_s_edit)
from .labelled import (LabelledDirection, direction_from_labels, fit_direction, read_labels, save_direction,
                       write_labelled_direction)
from .localized import localized_channels, write_localized_channels
from .principal import Directions, load_directions, principal_directions, write_directions
from .region import RegionEdit, fill_holes, local_edit, recorded_projection, reedit
from .render import BLENDS, current_image, render, render_segments, result_drawer
from .saved import SavedEdit, edit_saved_result, parse_sweep
from .spaces import (direction_shape, direction_space, latent_space, layer_range, parse_segments,
                     resolve_style_layer, segment_indices, to_styles, to_wplus)

__all__ = ["BLENDS", "DirectionEdit", "Directions", "LabelledDirection", "direction_from_labels", "fit_direction",
           "read_labels", "save_direction", "write_labelled_direction", "localized_channels",
           "write_localized_channels", "StyleEdit", "RegionEdit", "apply_direction", "apply_edits",
           "apply_style_edits", "current_image", "direction_shape", "direction_space", "edit_result",
           "SavedEdit", "edit_saved_result", "fill_holes", "latent_space", "layer_range", "load_direction", "load_directions",
           "local_edit", "parse_s_edit", "parse_segments", "parse_sweep", "principal_directions", "recorded_projection", "reedit",
           "render", "render_segments", "resolve_direction", "result_drawer", "resolve_style_layer", "segment_indices",
           "to_styles", "to_wplus", "write_directions"]
