"""Synthesis and evaluation of generated images.

- `generate`: the command `python -m spade_tf.generate` (synthesis, with --evaluate its scores), over
  `sources` (a run folder, an export or an NVlabs checkpoint behind the export's signatures),
  `layouts` (label PNGs or a dataset split) and `synthesis` (resumable image writing, index.html);
- `segmentation`: mIoU and pixel accuracy of a segmenter on generated images against their layouts
  (confusion matrix and scores);
- `fid`, with the extractors in `inception`: FID and KID (`python -m spade_tf.evaluation fid`).

Their options are the config's `eval` section (`options` checks it)."""
