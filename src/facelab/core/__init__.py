"""The shared core: conventions every part of the book uses, defined once.

- :mod:`facelab.core.landmarks` - the iBUG 68-point layout: named groups (``LANDMARKS["eye_left"]``), mirror pairs.
- :mod:`facelab.core.images` - image-batch checks, resize, Gaussian blur, PSNR/SSIM.
- :mod:`facelab.core.geometry` - Umeyama similarity fits (numpy and torch, batched) and warps.
- :mod:`facelab.core.regions` - face-region masks drawn from landmarks.
- :mod:`facelab.core.scores` - the score convention (similarity, higher = more alike) and genuine/impostor pairs.

The core imports only ``facelab.runtime``-level code and third-party packages, never a method package.
"""
