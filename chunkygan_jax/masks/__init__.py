"""The segment masks S of ChunkyGAN (paper eq. 1): where they come from, how they combine the segment
images, how they are shown and judged, and the `masks=` option that picks their source.

  sources.py     the mask source protocol (`source_masks`) and the simple sources: `FixedMasks`,
                 `LogitMasks`, the soft-Voronoi `default_layout`, label maps, `normalize_masks`
  composite.py   `composite` (eq. 1 and 3) and `luminance_where_grey` (a grey target compared in grey)
  colors.py      `palette`, `color_code` (masks as a colour-coded image)
  metrics.py     coherence: `neighbour_agreement`, `connected_pieces`, `mask_coherence`
  segmenter/     the segment generator G^S (a mask source made of the image generator's features)
  options.py     the `masks=` option -> a mask source (`make_mask_source`), what a result records about
                 it (`mask_source_record`), the segmenter that made a result (`segmenter_for_result`),
                 `parse_mask_spec` for the command lines

This file imports nothing: the submodules sit in different layers (sources, composite, colors and
metrics low, the segmenter above the generators' checkpoints, options above the segmenter), so each is
imported by its own name, e.g. `from chunkygan_jax.masks.sources import FixedMasks`.
"""
