"""`measure`: image size, the heaviest layers, the base image's share, a size budget."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlsentinel_ops.engine import Engine, Layer
from sqlsentinel_ops.errors import ImageNotFound

BASE_LABEL = "org.opencontainers.image.base.name"
_NOP = re.compile(r"^/bin/sh -c #\(nop\)\s*")
_SHELL = re.compile(r"^/bin/sh -c ")
# The legacy builder prefixes RUN layers with the build args in effect: "|2 A=1 B=2 ".
_ARGS = re.compile(r"^\|\d+ (?:\S+=\S*\s+)*")


@dataclass(frozen=True)
class Measurement:
    """Sizes of one image, in bytes, uncompressed as the engine stores them."""

    image: str
    image_id: str
    size: int
    layers: list[Layer]
    base: str | None
    base_size: int | None

    @property
    def base_share(self) -> float | None:
        """Fraction of the size that comes from the base image."""
        if self.base_size is None or not self.size:
            return None
        return self.base_size / self.size

    def as_json(self) -> dict[str, Any]:
        """The JSON form; layers largest first."""
        return {
            "image": self.image,
            "image_id": self.image_id,
            "size_bytes": self.size,
            "base_image": self.base,
            "base_size_bytes": self.base_size,
            "base_share": None
            if self.base_share is None
            else round(self.base_share, 4),
            "layers": [
                {"size_bytes": layer.size, "instruction": instruction(layer)}
                for layer in largest_first(self.layers)
            ],
        }


def measure(engine: Engine, image: str, base: str | None) -> Measurement:
    """Inspect the image and its base (the option, else the build's base label)."""
    info = engine.image(image)
    layers = engine.history(image)
    base = base or info.labels.get(BASE_LABEL)
    base_size = None
    if base:
        try:
            base_size = engine.image(base).size
        except ImageNotFound:
            base_size = None
    return Measurement(image, info.id, info.size, layers, base, base_size)


def largest_first(layers: list[Layer]) -> list[Layer]:
    """Layers that add bytes, largest first."""
    return sorted((layer for layer in layers if layer.size), key=lambda la: -la.size)


def instruction(layer: Layer) -> str:
    """The Dockerfile instruction that made a layer, as its author wrote it."""
    text = _ARGS.sub("", layer.created_by.strip())
    if not text:
        return layer.comment or "(base image)"
    if _NOP.match(text):
        return _NOP.sub("", text)
    if _SHELL.match(text):
        return "RUN " + _SHELL.sub("", text)
    return text.removesuffix(" # buildkit")
