"""Data layer: reading 3D files, datasets, preprocessing cache, augmentations."""
