"""Inference helpers shared by ``embed``, retrieval, zero-shot, ``explain`` and ``clusters``.

* :mod:`.runs`: load a pretrain run for inference (weights, tokenizer, device);
* :mod:`.inputs`: image paths and report text to model tensors, with the same preprocessing
  as ``prepare`` (decode, DICOM windowing, MONOCHROME1, letterbox) and the run's eval
  transform (resize, centre crop, normalise);
* :mod:`.encode`: batched global / local embeddings of images and reports.
"""
