"""The standard benchmarks, read from the user's copy (``root=``; nothing is downloaded):
one module per dataset family, each building a manifest table in memory from the dataset's own
layout and published split lists, then a dataset through :func:`unipair.data.manifest.manifest_data`
(media files) or :func:`unipair.data.assemble.assemble` (feature pickles)."""
