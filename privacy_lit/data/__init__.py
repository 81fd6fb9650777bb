"""Datasets in the real benchmarks' on-disk layouts, and the LightningDataModules that pair them."""
