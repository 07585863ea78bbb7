"""Networks, one per module: HF-GAN generator, 3D Refiner, discriminator, segmenter."""
