"""Training pipelines for stage 1, stage 2 and the tumour segmenter.

* :mod:`.datasets` - BraTS case folders prepared with the inference code, the case split,
  stage-1 slice sampling (brain-area filter, missing-sequence patterns), 3D crops and the
  stage-1 output cache used by stage 2.
* :mod:`.losses` - SSIM (2D/3D, region-restricted), feature similarity and GAN terms.
* :mod:`.stage1` - ``train_stage1``: HF-GAN with intensity encoding (paper equation 6).
* :mod:`.segmenter` - ``train_segmenter`` and ``load_segmenter_weights`` (MONAI SegResNet).
* :mod:`.stage2` - ``train_stage2``: the 3D Refiner with SSIM + frozen-segmenter Dice (equation 7).
* :mod:`.common` - run folder, epoch loop, resumable checkpoints, time budget, bundle writing.

Every command writes into one run folder whose model bundle ``mrisynth synthesize --model``
loads directly; ``mrisynth train`` (``cli/train.py``) is the command-line front end.
"""
