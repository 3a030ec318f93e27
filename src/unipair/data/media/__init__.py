"""Readers and transforms for media on disk: audio, video, images and text.

One module per kind; each reads one sample from a file (or a string) into a numpy array or
tensor, with the peers' preprocessing recipes as options. Heavy decoders (PyAV, Pillow,
tokenizers) are optional extras, imported inside the functions that need them, so that
``unipair.data`` imports without them.
"""
