"""Raw-layout readers, report parsing, the prepared format, torch Datasets and transforms."""
