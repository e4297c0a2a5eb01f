"""Source-free personalisation of an expression model from one neutral video (DSFDA, chapter 08)."""
