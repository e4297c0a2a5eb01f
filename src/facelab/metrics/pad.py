"""pad metrics (see facelab.metrics)."""

__all__: list[str] = []
