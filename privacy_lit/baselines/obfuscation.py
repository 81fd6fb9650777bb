"""Obfuscation baselines of the SPAct protocol (Tab. 1–3: Obf-Blackening, Obf-StrongBlur,
Obf-WeakBlur): find the private regions with an off-the-shelf detector, then blacken or blur them.

Same interface as :class:`~privacy_lit.baselines.downsample.Downsample`: float images
``B × 3 × H × W`` in [0, 1] → the same shape; clips go through frame by frame (as
:func:`~privacy_lit.models.anonymizer.anonymize_pixels` flattens them). Everything outside the
detected regions is returned unchanged, bit for bit.

Detectors are pluggable: anything callable as ``detector(image) -> boxes`` with ``image`` an
``H × W × 3`` uint8 RGB array and ``boxes`` an ``N × 4`` int array of ``x0, y0, x1, y1`` (end
exclusive) in that image's pixels (:class:`RegionDetector`). Provided:

- :class:`HaarCascadeDetector` (the default): OpenCV's Haar frontal-face cascade
  (``haarcascade_frontalface_default.xml``, Viola & Jones), shipped inside the OpenCV 4 wheel:
  a real detector that works offline with no weights to download. Needs OpenCV 4 (the project
  pins ``opencv-python-headless<5``: OpenCV 5 removed ``cv2.CascadeClassifier``,
  ``cv2.data.haarcascades`` and the HOG detector); it raises a clear error on OpenCV 5.
  Other cascades (upper or full body) are one argument away.
- :class:`CascadeFaceDetector`: frontal faces with the LBP cascade that scikit-image ships
  (``skimage.data.lbp_frontal_face_cascade_filename()``, trained with OpenCV); works with any
  OpenCV, needs ``scikit-image``.
- :class:`HOGPersonDetector`: whole persons with OpenCV's HOG + linear-SVM pedestrian detector
  (Dalal & Triggs; OpenCV 4). Not part of the default: on scikit-image's sample photographs it
  fires on 3 of 12 images without a person (rocket, retina, page) and its only box on the
  astronaut is a 73 × 146 patch in the lower right, not her figure; its 64 × 128 window also
  needs 64 px frames enlarged fourfold.
- :class:`TorchvisionDetector`: any torchvision detection model (e.g. a COCO Faster R-CNN, the
  kind of person detector the prior works used) whose weights you have locally;
  :meth:`TorchvisionDetector.from_weights` builds one from a state-dict file. Never downloads.
- :class:`UnionDetector`: the boxes of several detectors (e.g. faces and persons).

SPAct's obfuscation baselines work on the regions of an off-the-shelf detector; which detector,
which regions (faces or whole persons) and which kernel sizes could not be confirmed from the
papers at hand (*unconfirmed*; the large utility drops of Tab. 1 suggest whole persons), so the
choices here are documented and configurable. The default (:func:`default_detector`) adds
torchvision's COCO Faster R-CNN *persons* to the Haar faces when its weights are in torch's hub
cache; without them only *faces* are obfuscated: that hides identity and the skin colour of the
face, not the gender cues of the body, nudity or relationships. Or pass a person detector:
``build_baseline("blacken", detector=UnionDetector([HaarCascadeDetector(), HOGPersonDetector()]))``
or a :class:`TorchvisionDetector` with local COCO weights (the detector the prior works used).

On the embedded synthetic benchmark (stick figures at 64 px) the face detectors rarely fire.
Measured on every second of the demo's 400 test images (135 with a face, 65 without): Haar
finds 11 of the 135 faces (2 detections on faceless images) and nothing in 96 sampled clip
frames; the LBP cascade finds 49 (2); HOG "persons" fire on 150 of the 200 images, faces or not.
So there the obfuscation rows stay close to raw data.
That is the weakness the paper names (Sec. 2): obfuscation is only as good as its localization.

Blur strength is set relative to each region, so that "strong" and "weak" mean the same at 112 px
(the benchmarks) and at 512 px: a Gaussian with ``σ = sigma_fraction × shorter side of the
(expanded) box`` and a ``2⌈3σ⌉ + 1`` kernel (±3σ). Strong blur uses ``sigma_fraction = 0.25``
(only a blob of the region's mean colours is left: a 25 px face at 112 px, 35 px with the margin,
gets σ ≈ 9 px), weak blur ``0.05`` (details softened; the face's shape and colours remain).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from torch import Tensor, nn

STRONG_BLUR_SIGMA_FRACTION = 0.25
WEAK_BLUR_SIGMA_FRACTION = 0.05
DEFAULT_MARGIN = 0.2


@runtime_checkable
class RegionDetector(Protocol):
    """``detector(image)``: ``H × W × 3`` uint8 RGB → ``N × 4`` int boxes ``x0, y0, x1, y1``."""

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.int64)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"a detector takes an H × W × 3 uint8 RGB image, got {image.dtype} {image.shape}"
        )


def _to_working_size(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize so the shorter side is ``size`` (area when shrinking, bilinear when enlarging)."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    if scale == 1:
        return image, 1.0
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp
    )
    return out, scale


def _clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(boxes[:, 0]), 0, width)
    y0 = np.clip(np.floor(boxes[:, 1]), 0, height)
    x1 = np.clip(np.ceil(boxes[:, 2]), 0, width)
    y1 = np.clip(np.ceil(boxes[:, 3]), 0, height)
    out = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]


class CascadeFaceDetector:
    """Frontal faces with scikit-image's shipped LBP cascade (offline, no weights to fetch).

    The image is first resized so its shorter side is ``detect_size`` pixels: the cascade's
    24 px base window then sees faces of similar size whether the input is 112 px (benchmarks)
    or 512 px, and the cost per image is bounded. Parameters were chosen on scikit-image's
    sample photographs, at 512 px and shrunk to 112 px (three different resizings): the
    astronaut's face is found in every variant, and the cat, coffee, rocket, Hubble, retina and
    histology images give no detection. A ``min_face`` of 0.1 brought false detections (a patch
    of the astronaut's suit, the retina) and missed the 112 px face in one resizing.

    Args:
        detect_size: shorter side of the working image (224).
        min_face: smallest face, as a fraction of the image's shorter side (0.15: 17 px at
            112 px; smaller faces are too few pixels for the cascade to be reliable).
        scale_factor: ratio between successive window sizes (1.2).
        step_ratio: window step as a fraction of the window (1 = scan every position).
        min_neighbor_number: overlapping raw detections needed to keep one (4).
        intersection_score_threshold: overlap for merging raw detections (0.5).
        cascade_file: another OpenCV-format LBP cascade XML (default: scikit-image's).
    """

    def __init__(
        self,
        detect_size: int = 224,
        min_face: float = 0.15,
        scale_factor: float = 1.2,
        step_ratio: float = 1.0,
        min_neighbor_number: int = 4,
        intersection_score_threshold: float = 0.5,
        cascade_file: str | Path | None = None,
    ) -> None:
        if detect_size < 24:
            raise ValueError(f"detect_size must be >= 24 (the cascade's window), got {detect_size}")
        if not 0 < min_face <= 1:
            raise ValueError(f"min_face is a fraction of the image side in (0, 1], got {min_face}")
        if scale_factor <= 1:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}")
        self.detect_size = detect_size
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.step_ratio = step_ratio
        self.min_neighbor_number = min_neighbor_number
        self.intersection_score_threshold = intersection_score_threshold
        self.cascade_file = None if cascade_file is None else str(cascade_file)
        self._cascade = None  # built on first use; not pickled (a compiled skimage object)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cascade": None}

    def _get_cascade(self):
        if self._cascade is None:
            try:
                from skimage import data
                from skimage.feature import Cascade
            except ImportError as err:  # scikit-image is what ships the cascade file
                raise ImportError(
                    "CascadeFaceDetector needs scikit-image (pip install scikit-image)"
                ) from err
            path = self.cascade_file or data.lbp_frontal_face_cascade_filename()
            if not Path(path).is_file():
                raise FileNotFoundError(f"cascade file {path} not found")
            self._cascade = Cascade(path)
        return self._cascade

    def __call__(self, image: np.ndarray) -> np.ndarray:
        _check_image(image)
        work, scale = _to_working_size(image, self.detect_size)
        gray = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        side = max(24, round(self.min_face * min(gray.shape)))
        found = self._get_cascade().detect_multi_scale(
            img=gray, scale_factor=self.scale_factor, step_ratio=self.step_ratio,
            min_size=(side, side), max_size=gray.shape,
            min_neighbor_number=self.min_neighbor_number,
            intersection_score_threshold=self.intersection_score_threshold,
        )  # fmt: skip
        if not found:
            return _no_boxes()
        boxes = np.array(
            [[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in found],
            dtype=np.float64,
        )
        return _clip_boxes(boxes / scale, *image.shape[:2])


class HaarCascadeDetector:
    """OpenCV's Haar cascades (OpenCV 4 only: ``cv2.CascadeClassifier`` is gone from OpenCV 5).

    ``cascade`` names a file in ``cv2.data.haarcascades`` (``haarcascade_frontalface_default.xml``
    for faces, ``haarcascade_upperbody.xml`` / ``haarcascade_fullbody.xml`` for persons) or is a
    path. The image is resized as in :class:`CascadeFaceDetector`; ``min_size`` is a fraction of
    its shorter side, ``scale_factor`` and ``min_neighbors`` are OpenCV's.

    Defaults were chosen on scikit-image's sample photographs, at full size and shrunk to 112 px
    with area, bilinear and bicubic resizing: ``min_neighbors=6`` finds the astronaut's face once
    in all four versions and nothing in coffee, rocket, chelsea, camera, cat, retina, Hubble,
    histology, page, text, textures or the colour wheel; what it still finds are coin portraits
    at 112 px and a clock face. ``min_neighbors=5`` (OpenCV's habit) adds a second box on the
    bicubic astronaut and a third coin.
    """

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        detect_size: int = 224,
        min_size: float = 0.15,
        scale_factor: float = 1.1,
        min_neighbors: int = 6,
    ) -> None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise RuntimeError(
                f"OpenCV {cv2.__version__} has no Haar cascades (removed in OpenCV 5); install "
                "opencv-python-headless<5, or use CascadeFaceDetector (scikit-image's LBP cascade)"
            )
        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        if not path.is_file():
            raise FileNotFoundError(f"Haar cascade {cascade} not found (looked in {path.parent})")
        self.cascade = str(path)
        self.detect_size = detect_size
        self.min_size = min_size
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self._classifier = None  # loaded on first use; not pickled (an OpenCV object)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_classifier": None}

    def _get_classifier(self):
        if self._classifier is None:
            try:
                classifier = cv2.CascadeClassifier(self.cascade)
            except (cv2.error, SystemError) as err:  # OpenCV reports a malformed file this way
                raise ValueError(f"{self.cascade} is not a cascade OpenCV can load") from err
            if classifier.empty():
                raise ValueError(f"{self.cascade} is not a cascade OpenCV can load")
            self._classifier = classifier
        return self._classifier

    def __call__(self, image: np.ndarray) -> np.ndarray:
        _check_image(image)
        work, scale = _to_working_size(image, self.detect_size)
        gray = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
        side = max(1, round(self.min_size * min(gray.shape)))
        rects = self._get_classifier().detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(side, side),
        )  # fmt: skip
        if len(rects) == 0:
            return _no_boxes()
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        return _clip_boxes(boxes / scale, *image.shape[:2])


class HOGPersonDetector:
    """Whole persons with OpenCV's HOG people detector (64 × 128 window; OpenCV 4 only).

    Small images are enlarged so the shorter side is ``detect_size`` (the window needs 128 px of
    height). Args: ``win_stride`` and ``padding`` in pixels, ``scale`` between pyramid levels,
    ``hit_threshold`` on the SVM score.
    """

    def __init__(
        self,
        detect_size: int = 256,
        win_stride: int = 8,
        padding: int = 8,
        scale: float = 1.05,
        hit_threshold: float = 0.0,
    ) -> None:
        if not hasattr(cv2, "HOGDescriptor"):
            raise RuntimeError(
                f"OpenCV {cv2.__version__} has no HOG people detector (removed in OpenCV 5); "
                "install opencv-python-headless<5, or use TorchvisionDetector for persons"
            )
        self.detect_size = detect_size
        self.win_stride = win_stride
        self.padding = padding
        self.scale = scale
        self.hit_threshold = hit_threshold

    def __call__(self, image: np.ndarray) -> np.ndarray:
        _check_image(image)
        work, scale = _to_working_size(image, max(self.detect_size, min(image.shape[:2])))
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        rects, _ = hog.detectMultiScale(
            work, hitThreshold=self.hit_threshold, winStride=(self.win_stride,) * 2,
            padding=(self.padding,) * 2, scale=self.scale,
        )  # fmt: skip
        if len(rects) == 0:
            return _no_boxes()
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        return _clip_boxes(boxes / scale, *image.shape[:2])


class TorchvisionDetector:
    """Regions from a torchvision detection model (``model(list of 3×H×W) -> [{boxes, labels,
    scores}]``), keeping ``labels`` (COCO: 1 = person) above ``score_threshold``.

    Use it when the weights are on disk (nothing is downloaded):
    ``TorchvisionDetector.from_weights("fasterrcnn_resnet50_fpn", "frcnn_coco.pth")``.
    """

    def __init__(
        self,
        model: nn.Module,
        labels: Sequence[int] = (1,),
        score_threshold: float = 0.5,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.eval().to(device)
        self.labels = tuple(labels)
        self.score_threshold = score_threshold
        self.device = torch.device(device)

    @classmethod
    def from_weights(
        cls, arch: str, weights_path: str | Path, num_classes: int = 91, **kwargs
    ) -> TorchvisionDetector:
        """Build ``torchvision.models.detection.<arch>`` and load a local state dict."""
        from torchvision.models import detection

        builder = getattr(detection, arch, None)
        if builder is None or not callable(builder):
            raise ValueError(f"torchvision.models.detection has no model {arch!r}")
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"detector weights {path} not found (nothing is downloaded)")
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return cls(model, **kwargs)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        _check_image(image)
        x = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(self.device)
        out = self.model([x])[0]
        keep = out["scores"] >= self.score_threshold
        keep &= torch.isin(out["labels"], torch.tensor(self.labels, device=out["labels"].device))
        return _clip_boxes(out["boxes"][keep].cpu().numpy(), *image.shape[:2])


class UnionDetector:
    """All boxes of several detectors (e.g. faces and persons)."""

    def __init__(self, detectors: Sequence[RegionDetector]) -> None:
        if not detectors:
            raise ValueError("UnionDetector needs at least one detector")
        self.detectors = list(detectors)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.concatenate([_clip_boxes(d(image), *image.shape[:2]) for d in self.detectors])


def cached_coco_detector_weights() -> Path:
    """Where torchvision keeps the COCO Faster R-CNN weights once downloaded (torch's hub cache,
    ``$TORCH_HOME/hub/checkpoints``); copy them there on a machine without internet."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    filename = Path(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def default_detector() -> RegionDetector:
    """The obfuscation baselines' detector: OpenCV's Haar faces, joined by torchvision's COCO
    Faster R-CNN *persons* when its weights are already in torch's hub cache
    (:func:`cached_coco_detector_weights`; never downloaded). With the weights the rows follow
    the prior works' protocol (whole persons); without them they obfuscate faces only."""
    faces = HaarCascadeDetector()
    weights = cached_coco_detector_weights()
    if not weights.is_file():
        return faces
    return UnionDetector(
        [faces, TorchvisionDetector.from_weights("fasterrcnn_resnet50_fpn", weights)]
    )


def expand_boxes(boxes: np.ndarray, margin: float, height: int, width: int) -> np.ndarray:
    """Grow each box by ``margin`` × its width/height on every side, clipped to the image.

    Why: face detectors return the tight inner face; hair, ears and chin identify too.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = boxes[:, 2:] - boxes[:, :2]
    grown = np.concatenate([boxes[:, :2] - margin * size, boxes[:, 2:] + margin * size], axis=1)
    return _clip_boxes(grown, height, width)


class Obfuscate(nn.Module):
    """Blacken or blur the regions a detector finds; the rest of the image is untouched.

    Args:
        mode: ``"blacken"`` (regions set to ``fill``) or ``"blur"`` (Gaussian).
        detector: a :class:`RegionDetector`; default :func:`default_detector` (Haar faces, and
            COCO persons when torchvision's detector weights are on disk).
        sigma_fraction: blur σ as a fraction of each expanded box's shorter side (module
            docstring: 0.25 strong, 0.05 weak). Ignored when blackening.
        margin: boxes grow by this fraction of their size on each side before obfuscation.
        fill: the value of blackened pixels (0 = black).

    No gradient flows through it: detection is not differentiable (it is a heuristic baseline).
    """

    def __init__(
        self,
        mode: Literal["blacken", "blur"] = "blacken",
        detector: RegionDetector | None = None,
        sigma_fraction: float = STRONG_BLUR_SIGMA_FRACTION,
        margin: float = DEFAULT_MARGIN,
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in ("blacken", "blur"):
            raise ValueError(f"mode must be 'blacken' or 'blur', got {mode!r}")
        if sigma_fraction <= 0:
            raise ValueError(f"sigma_fraction must be > 0, got {sigma_fraction}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.mode = mode
        self.detector = detector if detector is not None else default_detector()
        self.sigma_fraction = sigma_fraction
        self.margin = margin
        self.fill = fill

    def extra_repr(self) -> str:
        blur = f", sigma_fraction={self.sigma_fraction}" if self.mode == "blur" else ""
        return (
            f"mode={self.mode}{blur}, margin={self.margin}, detector={type(self.detector).__name__}"
        )

    def regions(self, image: Tensor) -> np.ndarray:
        """The (expanded) boxes that :meth:`forward` obfuscates in one ``3 × H × W`` image."""
        pixels = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8)
        pixels = pixels.permute(1, 2, 0).cpu().numpy()
        h, w = pixels.shape[:2]
        return expand_boxes(self.detector(np.ascontiguousarray(pixels)), self.margin, h, w)

    def _blur_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Blurred pixels of one box (``h × w × 3``), computed with its surroundings as context."""
        x0, y0, x1, y1 = (int(v) for v in box)
        sigma = max(self.sigma_fraction * min(x1 - x0, y1 - y0), 0.5)
        radius = math.ceil(3 * sigma)
        cx0, cy0 = max(0, x0 - radius), max(0, y0 - radius)
        cx1, cy1 = min(image.shape[1], x1 + radius), min(image.shape[0], y1 + radius)
        crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
        blurred = cv2.GaussianBlur(
            crop, (2 * radius + 1, 2 * radius + 1), sigmaX=sigma, sigmaY=sigma,
            borderType=cv2.BORDER_REFLECT_101,
        )  # fmt: skip
        return blurred[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images B × 3 × H × W, got shape {tuple(x.shape)}")
        out = x.clone()
        for i in range(x.shape[0]):
            boxes = self.regions(x[i])
            if len(boxes) == 0:
                continue
            if self.mode == "blacken":
                for x0, y0, x1, y1 in boxes.tolist():
                    out[i, :, y0:y1, x0:x1] = self.fill
                continue
            # Blur every box from the *input* (not from a partly blurred output), paste after.
            image = x[i].permute(1, 2, 0).float().cpu().numpy()
            patches = [self._blur_box(image, box) for box in boxes]
            for (x0, y0, x1, y1), patch in zip(boxes.tolist(), patches, strict=True):
                out[i, :, y0:y1, x0:x1] = torch.from_numpy(patch).permute(2, 0, 1).to(out)
        return out
