"""What a request carries, read and checked in memory (nothing is written to disk): the multipart form,
the image (JPEG or PNG; its pixel count is checked from the header, before decoding) and the intrinsics.

Every problem is a :class:`~visloc.service.errors.RequestError` with the status it is answered with:
413 too large, 415 not a JPEG / PNG or not a multipart form, 422 anything malformed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..datasets.image_folder import default_camera
from ..errors import ConfigError
from ..geometry.camera import CAMERA_MODELS, Camera, InvalidCameraError
from ..io.images import image_to_array
from .errors import invalid, too_large, unsupported

#: Image formats accepted (Pillow's names).
IMAGE_FORMATS = ("JPEG", "PNG")
#: Largest text field of a form, in bytes.
MAX_FIELD_BYTES = 4096
#: EXIF tags: the Exif sub-IFD and, in it, the 35 mm-equivalent focal length (mm); the long film side.
_EXIF_IFD, _EXIF_FOCAL_35MM, _FILM_LONG_SIDE_MM = 0x8769, 0xA405, 36.0


@dataclass(frozen=True)
class FormField:
    """One field of the ``/v1/localize`` and ``/v1/retrieve`` forms (it also documents the OpenAPI schema)."""

    name: str
    description: str
    kind: str = "string"  # "string", "integer" or "binary" (a file)
    required: bool = False


IMAGE_FIELD = FormField("image", "The query image, JPEG or PNG (EXIF orientation is applied).", "binary", True)
CAMERA_FIELDS = (
    FormField("camera", "Intrinsics as a COLMAP camera line 'MODEL WIDTH HEIGHT PARAMS...', e.g. "
                        "'PINHOLE 640 480 525 525 319.5 239.5' (pixel centres at integers, as visloc)."),
    FormField("model", f"Intrinsics field by field: the COLMAP model, one of {', '.join(CAMERA_MODELS)}."),
    FormField("width", "Image width in pixels (with model).", "integer"),
    FormField("height", "Image height in pixels (with model).", "integer"),
    FormField("params", "The model's parameters in COLMAP order, separated by spaces or commas (with model)."),
)
#: A position prior (``service/priors.py``): retrieval searches only the database images within its radius.
PRIOR_FIELDS = (
    FormField("prior_center", "Prior: a previous camera centre 'x y z' in map coordinates (with prior_radius)."),
    FormField("prior_radius", "Prior: radius around prior_center in map units (a 3-D distance)."),
    FormField("prior_lat", "Prior: GPS latitude in degrees, WGS84 (with prior_lon and prior_accuracy; needs a "
                           "geo-referenced map)."),
    FormField("prior_lon", "Prior: GPS longitude in degrees, WGS84."),
    FormField("prior_h", "Prior: GPS ellipsoidal height in metres (optional; the distance is horizontal)."),
    FormField("prior_accuracy", "Prior: GPS accuracy in metres, the radius kept."),
)
LOCALIZE_FIELDS = (
    IMAGE_FIELD,
    *CAMERA_FIELDS,
    FormField("method", "Pose estimator: auto (the server's default), pnp, essential, relpose or unified."),
    FormField("name", "A name for the query, echoed in the answer (default 'query')."),
    FormField("details", "'true': the answer also holds 'details', the query's matches per retrieved image "
                         "(at most 200 pairs each, as the web page draws them); default 'false'."),
    *PRIOR_FIELDS,
)
RETRIEVE_FIELDS = (
    IMAGE_FIELD,
    FormField("num", "Database images to return (default: the server's retrieval setting).", "integer"),
    FormField("name", "A name for the query, echoed in the answer (default 'query')."),
    *PRIOR_FIELDS,
)


def form_schema(fields: tuple[FormField, ...]) -> dict:
    """The OpenAPI ``requestBody`` of a multipart form with ``fields``."""
    properties = {}
    for f in fields:
        kind = {"type": "string", "format": "binary"} if f.kind == "binary" else {"type": f.kind}
        properties[f.name] = {**kind, "description": f.description}
    schema = {"type": "object", "properties": properties, "required": [f.name for f in fields if f.required]}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


@dataclass(frozen=True)
class Upload:
    """A file part of a form."""

    filename: str
    content_type: str
    data: bytes


def parse_form(content_type: str | None, body: bytes, fields: tuple[FormField, ...]) -> dict[str, str | Upload]:
    """The parts of a ``multipart/form-data`` body, by name: text fields as strings, files as
    :class:`Upload`. Only ``fields`` are accepted, each at most once; the required ones must be there."""
    if not content_type:
        raise unsupported("send the request as multipart/form-data (no Content-Type given)")
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise unsupported(f"send the request as multipart/form-data, not {kind.decode('latin-1')}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise invalid("multipart/form-data without a boundary")
    parts: list[dict] = []
    header = {"name": b"", "value": b""}

    def on_part_begin() -> None:
        parts.append({"headers": {}, "data": bytearray()})

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += data[start:end]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        parts[-1]["headers"][header["name"].lower()] = header["value"]
        header["name"], header["value"] = b"", b""

    callbacks = {"on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except Exception as e:  # python-multipart's parse errors
        raise invalid(f"malformed multipart/form-data body ({e})") from None
    known = {f.name: f for f in fields}
    out: dict[str, str | Upload] = {}
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise invalid("malformed multipart/form-data body: a part without 'Content-Disposition: form-data; "
                          "name=...'")
        if name not in known:
            raise invalid(f"unknown form field {name!r}; the fields are {', '.join(known)}")
        if name in out:
            raise invalid(f"form field {name!r} is given twice")
        data = bytes(part["data"])
        if known[name].kind == "binary":
            out[name] = Upload(disposition.get(b"filename", b"").decode("utf-8", "replace"),
                               part["headers"].get(b"content-type", b"").decode("latin-1"), data)
            continue
        if b"filename" in disposition:
            raise invalid(f"form field {name!r} is text, not a file")
        if len(data) > MAX_FIELD_BYTES:
            raise too_large(f"form field {name!r} is longer than {MAX_FIELD_BYTES} bytes")
        try:
            out[name] = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise invalid(f"form field {name!r} is not UTF-8 text") from None
    missing = [f.name for f in fields if f.required and f.name not in out]
    if missing:
        raise invalid(f"missing form field(s): {', '.join(missing)}")
    return out


@dataclass(frozen=True)
class DecodedImage:
    """Attributes:
    pixels: ``(H, W, 3)`` uint8 RGB, EXIF orientation applied (as :func:`visloc.io.images.read_image`).
    format: ``JPEG`` or ``PNG``.
    exif_focal_px: the focal length in pixels from the EXIF 35 mm-equivalent focal length, or ``None``.
    """

    pixels: np.ndarray
    format: str
    exif_focal_px: float | None


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode a JPEG or PNG after checking the pixel count its header declares.

    Raises:
        RequestError: 415 not a JPEG or PNG; 413 more than ``max_pixels`` pixels (or Pillow's
            decompression-bomb limit); 422 empty, truncated or corrupt.
    """
    if not data:
        raise invalid("the image is empty")
    try:
        img = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))  # reads the header only
    except Image.DecompressionBombError as e:
        raise too_large(f"the image declares too many pixels ({e})") from None
    except UnidentifiedImageError:
        raise unsupported(f"not a {' or '.join(IMAGE_FORMATS)} image") from None
    except Exception as e:  # a header Pillow cannot parse
        raise invalid(f"cannot read the image header: truncated or corrupt ({e})") from None
    width, height = img.size
    if width * height > max_pixels:
        raise too_large(f"the image declares {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), "
                        f"more than the server's limit of {max_pixels / 1e6:.1f} megapixels; not decoded")
    try:
        img.load()  # truncated or corrupt data fails here
        focal = _exif_focal_px(img)
        pixels = image_to_array(img)
    except Image.DecompressionBombError as e:
        raise too_large(f"the image declares too many pixels ({e})") from None
    except Exception as e:
        raise invalid(f"cannot decode the {img.format} image: truncated or corrupt ({e})") from None
    return DecodedImage(pixels, str(img.format), focal)


def _exif_focal_px(img: Image.Image) -> float | None:
    """``f35 / 36 mm`` of the longer image side (which an EXIF rotation keeps), or ``None``."""
    try:
        f35 = float(img.getexif().get_ifd(_EXIF_IFD).get(_EXIF_FOCAL_35MM))
    except Exception:  # no EXIF, no tag, or a malformed one
        return None
    return f35 / _FILM_LONG_SIDE_MM * max(img.size) if math.isfinite(f35) and f35 > 0 else None


def parse_camera(fields: dict[str, str | Upload]) -> Camera | None:
    """The camera of the form's ``camera`` line or its ``model``/``width``/``height``/``params`` fields
    (``None`` when it has neither).

    Raises:
        RequestError: 422 both given, some of the four fields missing, or intrinsics a camera cannot have
            (an unknown model, a wrong number of parameters, NaN, infinite, a size or focal length that is
            not positive).
    """
    line = fields.get("camera")
    parts = {k: fields[k] for k in ("model", "width", "height", "params") if k in fields}
    if line and parts:
        raise invalid("give the intrinsics either as 'camera' or as model/width/height/params, not both")
    if line:
        try:
            return Camera.from_colmap_string(str(line))
        except (InvalidCameraError, ValueError) as e:
            raise invalid(f"camera {line!r}: {e}") from None
    if not parts:
        return None
    missing = [k for k in ("model", "width", "height", "params") if k not in parts]
    if missing:
        raise invalid(f"intrinsics field by field need model, width, height and params; missing: {', '.join(missing)}")
    text = " ".join([str(parts["model"]), str(parts["width"]), str(parts["height"]),
                     str(parts["params"]).replace(",", " ")])
    try:
        return Camera.from_colmap_string(text)
    except (InvalidCameraError, ValueError) as e:
        raise invalid(f"intrinsics {text!r}: {e}") from None


def query_camera(given: Camera | None, image: DecodedImage) -> tuple[Camera, str]:
    """The camera to localize ``image`` with and where it came from (``request`` or ``exif``).

    Raises:
        RequestError: 422 the given camera's size is not the image's, or no intrinsics were given and the
            image has no EXIF focal length.
    """
    height, width = image.pixels.shape[:2]
    if given is not None:
        if (given.width, given.height) != (width, height):
            raise invalid(f"the camera is {given.width}x{given.height} but the image is {width}x{height} "
                          "(after its EXIF orientation)")
        return given, "request"
    if image.exif_focal_px is None:
        raise invalid("no intrinsics: give 'camera' ('MODEL WIDTH HEIGHT PARAMS...') or model/width/height/params "
                      "(the image has no EXIF 35 mm focal length to fall back on)")
    try:
        return default_camera(width, height, image.exif_focal_px), "exif"
    except (InvalidCameraError, ConfigError) as e:
        raise invalid(f"the EXIF focal length gives no valid camera ({e})") from None


def parse_int(fields: dict[str, str | Upload], name: str, low: int, high: int) -> int | None:
    """The integer field ``name`` in ``[low, high]``, or ``None`` when absent (422 otherwise)."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise invalid(f"form field {name!r} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise invalid(f"form field {name!r} must be between {low} and {high}, got {number}")
    return number


__all__ = ["CAMERA_FIELDS", "IMAGE_FORMATS", "LOCALIZE_FIELDS", "PRIOR_FIELDS", "RETRIEVE_FIELDS", "DecodedImage", "FormField",
           "Upload", "decode_image", "form_schema", "parse_camera", "parse_form", "parse_int",
           "query_camera"]
