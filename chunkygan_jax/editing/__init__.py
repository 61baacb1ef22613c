"""Editing projected images: W-space directions, StyleSpace channels, local layered edits, hole filling.

Latent edits are pure functions of the latent pytree ({"codes": ..., maybe "segment_code"}) and work under
jit (strengths may be traced; layer ranges, channels and segment choices are static):

  - `apply_direction`: codes[s, lo:hi] += strength * d[lo:hi] for the chosen segments s, as the authors'
    tool does: W codes [n, 1, w_dim] are first broadcast to W+ [n, num_ws, w_dim]. Optionally the
    segment generator's code X^S [num_ws, w_dim] moves too, so that the masks follow geometric edits.
  - `apply_style_edits`: s[layer][s, channel] += strength, a raw additive offset in StyleSpace (the
    generator's style order, ToRGB layers included); W/W+ codes are converted to S first.
  - `apply_edits`: a list of `DirectionEdit` / `StyleEdit`, directions first, then style edits (the tool's
    order; once codes are in S there is no way back to W).
Rendering: `render` recomposes an image from (edited) latents and masks (paper eq. 1 and 3);
`edit_result` edits a saved or fresh `InversionResult` and returns a new one (so edits can be chained).

Region edits (paper section 5):
  - `local_edit`: project ONE segment into a user region (static mask = 1 - region, eq. 3), edit its
    code, and composite  region * G(X') + (1 - region) * input. The output becomes the input of the next
    edit (sequential layered edits, Fig. 9).
  - `fill_holes`: refine an edited code on a correction mask (Fig. 10): a single-segment projection
    starting from the edited code, with the target image fixed outside the correction region, whose
    generated content then fills that region.
Region projections with the same settings reuse one compiled projector (interactive editing).

The latent space is read from the codes themselves: a dict of layers is S, [n, 1, w_dim] is W and
[n, num_ws, w_dim] is W+.

Modules: spaces.py (latent spaces, parsing), directions.py (direction files), edits.py (edit specs and
latent edits), render.py (recomposing, edit_result), region.py (local edits, hole filling), saved.py
(editing a saved result as bin/edit does).
"""

from .directions import as_direction, load_direction
from .edits import (DirectionEdit, StyleEdit, apply_direction, apply_edits, apply_style_edits, describe,
                    edit_list, parse_s_edit)
from .region import RegionEdit, fill_holes, local_edit
from .render import BLENDS, current_image, edit_result, render, render_segments
from .saved import edit_saved_result
from .spaces import (latent_space, layer_range, parse_segments, resolve_style_layer, segment_indices, to_styles,
                     to_wplus)

__all__ = ["BLENDS", "DirectionEdit", "StyleEdit", "RegionEdit", "apply_direction", "apply_edits",
           "apply_style_edits", "current_image", "edit_result", "edit_saved_result", "fill_holes", "latent_space",
           "layer_range", "load_direction", "local_edit", "parse_s_edit", "parse_segments", "render",
           "render_segments", "resolve_style_layer", "segment_indices", "to_styles", "to_wplus"]
