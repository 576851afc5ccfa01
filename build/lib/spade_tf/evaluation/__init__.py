"""Evaluation of generated images: FID and KID (`fid`, with the extractors in `inception`) and
segmentation scores, mIoU and pixel accuracy (`segmentation`). Their options are the config's `eval`
section (`options` checks it). Command line: `python -m spade_tf.evaluation`."""
