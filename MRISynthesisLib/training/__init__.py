"""Training pipelines for stage 1, stage 2 and the tumour segmenter."""
