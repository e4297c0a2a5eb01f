"""Named columns of the packed parameter tensors of the synthetic world, in one place.

The world keeps its per-image and per-identity parameters as packed tensors (one row per image, batched on the
render device, see :class:`facelab.synth.render.Scene` and :class:`facelab.synth.identity.Identity`); the classes
below name their columns, so that code reads ``sc.light[:, Light.INTENSITY]`` rather than ``sc.light[:, 2]``.
An int column selects a (N,) vector, a slice column keeps the dimension (e.g. an (N, 3) colour).
:func:`facelab.synth.world.FaceWorld._scene` packs them in this order.
"""

from __future__ import annotations


class Pose:
    """``Scene.pose`` (N, 3), degrees."""
    YAW, PITCH, ROLL = 0, 1, 2


class Similarity:
    """``Scene.similarity`` (N, 3): the head's placement in the image (scale, shift in [-1, 1] image units)."""
    SCALE, SHIFT_X, SHIFT_Y = 0, 1, 2


class Light:
    """``Scene.light`` (N, 7): direction (degrees), intensity, ambient share and colour."""
    AZIMUTH, ELEVATION, INTENSITY, AMBIENT = 0, 1, 2, 3
    RGB = slice(4, 7)


class Background:
    """``Scene.background`` (N, 12): two colours blended along a gradient direction, noise amplitude, clothing."""
    COLOUR_A, COLOUR_B = slice(0, 3), slice(3, 6)
    GRADIENT_X, GRADIENT_Y = 6, 7
    NOISE = 8
    CLOTHING = slice(9, 12)


class Clutter:
    """``Scene.clutter`` (N, K, 8): K background ellipses."""
    X, Y, RADIUS_X, RADIUS_Y = 0, 1, 2, 3
    CENTRE, RADII = slice(0, 2), slice(2, 4)
    RGB = slice(4, 7)
    ALPHA = 7


class Makeup:
    """``Scene.makeup`` (N, 16): for each kind (lipstick, eyeshadow, eyeliner, blush) an RGB colour and a strength."""
    KINDS = ("lipstick", "eyeshadow", "eyeliner", "blush")
    LIPSTICK, LIPSTICK_ALPHA = slice(0, 3), 3
    EYESHADOW, EYESHADOW_ALPHA = slice(4, 7), 7
    EYELINER, EYELINER_ALPHA = slice(8, 11), 11
    BLUSH, BLUSH_ALPHA = slice(12, 15), 15

    @staticmethod
    def rgb(kind: str) -> slice:
        j = Makeup.KINDS.index(kind)
        return slice(4 * j, 4 * j + 3)

    @staticmethod
    def alpha(kind: str) -> int:
        return 4 * Makeup.KINDS.index(kind) + 3


class Degrade:
    """``Scene.degrade`` (N, 4): camera degradations."""
    RESOLUTION, BLUR, NOISE, JPEG = 0, 1, 2, 3
    NAMES = ("resolution", "blur", "noise", "jpeg")
    NEUTRAL = (1.0, 0.0, 0.0, 100.0)            # the value of each that leaves the image unchanged


class Face:
    """``Identity.face`` / ``Scene.face`` (N, 6): shape factors of the head."""
    FOREHEAD, NOSE_DEPTH, CHEEKS, EARS, NECK, AGE = 0, 1, 2, 3, 4, 5


class HairShape:
    """``Identity.hair_shape`` (N, 4), each in [0, 1]."""
    VOLUME, HAIRLINE, FRINGE, LENGTH = 0, 1, 2, 3


class Brow:
    """``Identity.brow`` (N, 2)."""
    THICKNESS, DARKNESS = 0, 1


class Beard:
    """``Identity.beard`` (N, 2): style (an index into :attr:`STYLES`, as a float) and density."""
    STYLE, DENSITY = 0, 1
    STYLES = ("none", "stubble", "full", "goatee", "moustache")
    NONE, STUBBLE, FULL, GOATEE, MOUSTACHE = range(5)


class Glasses:
    """``Identity.glasses`` (N, 4)."""
    WORN, SHAPE, DARKNESS, SIZE = 0, 1, 2, 3


class HairStyle:
    """Values of ``Identity.hair_style`` (indexes into :data:`facelab.synth.identity.HAIR_STYLES`)."""
    NAMES = ("short", "long", "bald", "fringe", "bob", "receding")
    SHORT, LONG, BALD, FRINGE, BOB, RECEDING = range(6)


class Texture:
    """Channels of ``Identity.texture`` (N, 3, R, R) in the frontal frame."""
    BLOTCHES, FRECKLES, MOLES = 0, 1, 2


class Layer:
    """Channels of an identity layer (:func:`facelab.synth.render.draw_identity`), as slices that keep the channel
    dimension. In the render stack that is posed, the skin channel is replaced by the occluder mask."""
    NAMES = ("r", "g", "b", "alpha", "face", "skin")
    RGB, ALPHA, FACE, SKIN = slice(0, 3), slice(3, 4), slice(4, 5), slice(5, 6)
    OCCLUDER = SKIN


# ---- kind-specific columns of ``Scene.occlusion_param`` (N, 8)
class ScarfParam:
    TOP, PATTERN = 0, 4                          # frontal-frame y of the top edge; striped when > 0.5
    RGB = slice(1, 4)


class MaskParam:
    TOP = 0                                      # offset of the top edge from the nose bridge
    RGB = slice(1, 4)


class HandParam:
    X, Y, ANGLE, SCALE, TONE = 0, 1, 2, 3, 4     # centre, rotation (radians), size, skin tone (0 light .. 1 deep)
    CENTRE = slice(0, 2)


class BlockParam:
    FRACTION, ROW, COLUMN, ASPECT, STRIPES = 0, 1, 2, 3, 4   # share of face pixels; centre in the face box; shape
    RGB = slice(5, 8)


class PixelsParam:
    FRACTION = 0                                 # share of face pixels replaced by noise
