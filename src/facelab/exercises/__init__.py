"""Checkable exercises for every chapter (issue 24): ``facelab.exercises.check("03.2", answer)``."""
