"""Moved to :mod:`facelab.studies.getting_started` (chapter 00's study module); this name stays for old imports."""

from facelab.studies.getting_started import *  # noqa: F401,F403
from facelab.studies.getting_started import CHAPTERS, ChapterInfo  # noqa: F401
