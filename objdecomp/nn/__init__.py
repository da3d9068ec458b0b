"""Building blocks shared by the methods: backbones, transformations, GAN blocks."""
