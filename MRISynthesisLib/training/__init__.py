"""Training pipelines for stage 1, stage 2 and the tumour segmenter.

The commands:

* :mod:`.stage1` - ``train_stage1``: HF-GAN with intensity encoding (paper equation 6).
* :mod:`.segmenter` - ``train_segmenter`` and ``load_segmenter_weights`` (MONAI SegResNet).
* :mod:`.stage2` - ``train_stage2``: the 3D Refiner with SSIM + frozen-segmenter Dice (equation 7).

What they share:

* :mod:`.options` - the options every command takes, their checks, and ``TrainingError``.
* :mod:`.presets` - what ``--config small|paper`` stands for (the paper's recipe and the project's).
* :mod:`.loop` - opening a run (``start_run``), the epoch trainer, time budget, best-epoch choice.
* :mod:`.run_files` - the run folder's log, metrics, resumable checkpoints and model bundle.
* :mod:`.optimisation` - schedule, optimiser, mixed precision, device, RNG seeding and state.
* :mod:`.losses` - SSIM (2D/3D, region-restricted), feature similarity and GAN terms.

Their data:

* :mod:`.cases` - BraTS case folders and the run folder's train/validation split.
* :mod:`.prepared_cases` - cases prepared with the inference code, cached in the run folder.
* :mod:`.input_patterns` - which other sequences each sample synthesises its target from.
* :mod:`.slices` - stage-1 slice sampling (brain-area filter, tumour oversampling, batches).
* :mod:`.crops` - the 3D crops of the segmenter and stage 2.
* :mod:`.stage1_outputs` - the stage-1 output cache stage 2 trains on.

Every command writes into one run folder whose model bundle ``mrisynth synthesize --model``
loads directly; ``mrisynth train`` (``cli/train.py``) is the command-line front end.
"""
from __future__ import annotations
