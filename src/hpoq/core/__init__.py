"""What producer and workers share: fingerprints, keys, names, paths and coordination."""
