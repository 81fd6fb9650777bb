"""Obfuscation baselines on a real photograph with a face (scikit-image's astronaut) with the
default detector (OpenCV's Haar frontal-face cascade) and the scikit-image LBP option, the
pluggable detector interface, and the baseline registry."""

from __future__ import annotations

import copy
import doctest
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

from privacy_lit.baselines import (
    BASELINE_NAMES,
    CascadeFaceDetector,
    Downsample,
    HaarCascadeDetector,
    HOGPersonDetector,
    Obfuscate,
    TorchvisionDetector,
    UnionDetector,
    baseline_label,
    build_baseline,
)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()  # 512 × 512 RGB, Eileen Collins' face around x 175–280, y 60–170


@pytest.fixture(scope="module")
def detector() -> HaarCascadeDetector:
    return HaarCascadeDetector()  # the obfuscation baselines' default


@pytest.fixture(scope="module")
def face(astronaut: np.ndarray, detector: HaarCascadeDetector) -> np.ndarray:
    boxes = detector(astronaut)
    assert boxes.shape == (1, 4), f"expected exactly the astronaut's face, got {boxes}"
    return boxes[0]


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0)


def _pixels(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())


def _centred_in(boxes: np.ndarray, region: np.ndarray) -> list[np.ndarray]:
    """Detections whose centre lies inside ``region``: a face found again at the same place."""
    x0, y0, x1, y1 = region
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return list(boxes[(cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)])


def _mask(shape: tuple[int, int], boxes: np.ndarray) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes.tolist():
        mask[y0:y1, x0:x1] = True
    return mask


def test_haar_is_the_default_detector(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no cached COCO weights
    assert cv2.__version__.startswith("4.")  # pinned: OpenCV 5 has no Haar cascades
    for name in ("blacken", "blur_strong", "blur_weak"):
        detector = build_baseline(name).detector
        assert isinstance(detector, HaarCascadeDetector)
        assert detector.cascade.endswith("haarcascade_frontalface_default.xml")


def test_detector_finds_the_astronauts_face(face: np.ndarray) -> None:
    x0, y0, x1, y1 = face.tolist()
    assert 150 <= x0 <= 200 and 40 <= y0 <= 90 and 250 <= x1 <= 310 and 140 <= y1 <= 200, face
    assert 80 <= x1 - x0 <= 130  # a face-sized box, not the whole torso


@pytest.mark.parametrize("interpolation", [cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC])
def test_detector_at_benchmark_resolution(astronaut: np.ndarray, detector, interpolation) -> None:
    small = cv2.resize(astronaut, (112, 112), interpolation=interpolation)
    boxes = detector(small)
    assert len(boxes) == 1 and _centred_in(boxes * 512 // 112, np.array([170, 55, 285, 175])), boxes


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea"])
def test_detector_finds_no_face_in_faceless_photos(name: str, detector) -> None:
    image = getattr(data, name)()
    assert len(detector(image)) == 0
    assert len(detector(cv2.resize(image, (112, 112), interpolation=cv2.INTER_AREA))) == 0


@pytest.mark.parametrize("name", ["blacken", "blur_strong"])
def test_obfuscation_hides_the_face_and_keeps_the_rest(
    name: str, astronaut: np.ndarray, detector, face: np.ndarray
) -> None:
    module = build_baseline(name)
    x = _tensor(astronaut)
    y = module(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    regions = module.regions(x[0])
    assert (
        len(regions) == 1
        and (regions[0][:2] <= face[:2]).all()
        and (regions[0][2:] >= face[2:]).all()
    )
    inside = _mask(astronaut.shape[:2], regions)
    assert torch.equal(y[0][:, ~inside], x[0][:, ~inside])  # everything else bit-identical
    changed = (y - x).abs()[0].mean(0)[inside]
    assert changed.mean() > 0.15  # the face region really changed
    if name == "blacken":
        assert (y[0][:, inside] == 0).all()
    assert _centred_in(detector(_pixels(y)), face) == []  # the face is not found any more


def test_scikit_image_lbp_cascade_option(astronaut: np.ndarray, face: np.ndarray) -> None:
    lbp = CascadeFaceDetector()
    assert len(_centred_in(lbp(astronaut), face)) == 1
    small = cv2.resize(astronaut, (112, 112), interpolation=cv2.INTER_AREA)
    assert len(_centred_in(lbp(small) * 512 // 112, face)) == 1
    assert len(lbp(data.coffee())) == 0
    module = build_baseline("blacken", detector=lbp)
    y = module(_tensor(astronaut))
    assert _centred_in(lbp(_pixels(y)), face) == []
    assert _centred_in(HaarCascadeDetector()(_pixels(y)), face) == []


def test_weak_blur_changes_less_than_strong_blur(astronaut: np.ndarray) -> None:
    x = _tensor(astronaut)
    strong, weak = build_baseline("blur_strong"), build_baseline("blur_weak")
    inside = _mask(astronaut.shape[:2], strong.regions(x[0]))
    d_strong = (strong(x) - x).abs()[0].mean(0)
    d_weak = (weak(x) - x).abs()[0].mean(0)
    assert 0 < d_weak[inside].mean() < 0.7 * d_strong[inside].mean()
    assert d_weak[~inside].max() == 0 and d_strong[~inside].max() == 0


def test_batch_of_images_with_and_without_faces(astronaut: np.ndarray) -> None:
    coffee = cv2.resize(data.coffee(), (512, 512), interpolation=cv2.INTER_AREA)
    x = torch.cat([_tensor(coffee), _tensor(astronaut)])
    y = build_baseline("blacken")(x)
    assert torch.equal(y[0], x[0])  # no face: untouched
    assert not torch.equal(y[1], x[1])


class _FixedBoxes:
    """A stand-in detector: the interface is just ``image -> N × 4 boxes``."""

    def __init__(self, boxes: list[list[int]]) -> None:
        self.boxes = np.array(boxes, dtype=np.int64).reshape(-1, 4)
        self.calls = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        self.calls += 1
        return self.boxes


def test_pluggable_detector_and_union() -> None:
    x = torch.rand(2, 3, 32, 40)
    union = UnionDetector([_FixedBoxes([[2, 3, 10, 12]]), _FixedBoxes([[30, 20, 50, 40]])])
    y = Obfuscate("blacken", detector=union, margin=0.0, fill=0.25)(x)
    expected = x.clone()
    expected[:, :, 3:12, 2:10] = 0.25
    expected[:, :, 20:32, 30:40] = 0.25  # clipped to the image
    assert torch.equal(y, expected)
    blurred = Obfuscate("blur", detector=_FixedBoxes([[0, 0, 40, 32]]), margin=0.0)(x)
    assert blurred.std() < 0.5 * x.std()  # whole image blurred: noise averaged out
    with pytest.raises(ValueError, match="B × 3 × H × W"):
        Obfuscate(detector=union)(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="mode"):
        Obfuscate("pixelate")  # type: ignore[arg-type]


class _FakeTorchvisionModel(nn.Module):
    """Returns what a torchvision detector returns, to check the filtering by label and score."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        assert images[0].dtype == torch.float32 and images[0].max() <= 1
        boxes = torch.tensor([[1.2, 2.7, 9.5, 9.9], [0.0, 0.0, 5.0, 5.0], [3.0, 3.0, 8.0, 8.0]])
        return [{"boxes": boxes, "labels": torch.tensor([1, 3, 1]),
                 "scores": torch.tensor([0.9, 0.95, 0.2])}]  # fmt: skip


def test_torchvision_detector_filters_and_loads_local_weights(tmp_path: Path) -> None:
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    boxes = TorchvisionDetector(_FakeTorchvisionModel(), labels=(1,), score_threshold=0.5)(image)
    assert boxes.tolist() == [[1, 2, 10, 10]]  # person above threshold, rounded outwards

    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    weights = tmp_path / "detector.pth"
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    torch.save(model.state_dict(), weights)
    real = TorchvisionDetector.from_weights("fasterrcnn_mobilenet_v3_large_320_fpn", weights)
    out = real(cv2.resize(data.astronaut(), (128, 128)))
    assert out.ndim == 2 and out.shape[1] == 4 and out.dtype == np.int64  # random weights: any N
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        TorchvisionDetector.from_weights("fasterrcnn_resnet50_fpn", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="no model"):
        TorchvisionDetector.from_weights("yolo", weights)


def test_cached_coco_weights_add_persons_to_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from privacy_lit.baselines import obfuscation

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = obfuscation.cached_coco_detector_weights()
    assert weights.parent == tmp_path / "checkpoints" and weights.suffix == ".pth"
    loaded = []

    def from_weights(arch: str, path: Path) -> TorchvisionDetector:
        loaded.append((arch, path))
        return TorchvisionDetector(_FakeTorchvisionModel())

    monkeypatch.setattr(TorchvisionDetector, "from_weights", from_weights)
    weights.parent.mkdir()
    weights.touch()  # what torchvision leaves after a download (or a copy from another machine)
    detector = build_baseline("blacken").detector
    assert isinstance(detector, UnionDetector) and loaded == [("fasterrcnn_resnet50_fpn", weights)]
    assert [type(d) for d in detector.detectors] == [HaarCascadeDetector, TorchvisionDetector]


def test_opencv_detectors_fail_clearly_without_opencv4(
    astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    boxes = HOGPersonDetector()(astronaut)  # persons: an option (UnionDetector), not the default
    assert boxes.ndim == 2 and boxes.shape[1] == 4
    with pytest.raises(FileNotFoundError, match="not found"):
        HaarCascadeDetector("no_such_cascade.xml")
    (tmp_path / "broken.xml").write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ValueError, match="not a cascade"):
        HaarCascadeDetector(str(tmp_path / "broken.xml"))(astronaut)
    monkeypatch.delattr(cv2, "CascadeClassifier")  # what OpenCV 5 looks like
    monkeypatch.delattr(cv2, "HOGDescriptor")
    with pytest.raises(RuntimeError, match="OpenCV"):
        HaarCascadeDetector()
    with pytest.raises(RuntimeError, match="OpenCV"):
        HOGPersonDetector()


def test_detector_survives_deepcopy(astronaut: np.ndarray) -> None:
    module = build_baseline("blacken")
    module(_tensor(cv2.resize(astronaut, (64, 64))))  # loads the cascade
    clone = copy.deepcopy(module)  # e.g. a config system copying modules: the cascade is reloaded
    assert clone.detector(astronaut).shape == (1, 4)
    lbp = build_baseline("blacken", detector=CascadeFaceDetector())
    lbp(_tensor(cv2.resize(astronaut, (64, 64))))
    assert copy.deepcopy(lbp).detector(astronaut).shape == (1, 4)


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_registry_builds_every_baseline(name: str) -> None:
    x = torch.rand(2, 3, 48, 48)
    module = build_baseline(name)
    assert isinstance(module, nn.Module)
    y = module(x)
    assert y.shape == x.shape and baseline_label(name)
    if name == "raw":
        assert torch.equal(y, x)
    if name.startswith("downsample"):
        factor = int(name.removeprefix("downsample"))
        assert isinstance(module, Downsample) and module.factor == factor
        assert torch.equal(y, Downsample(factor)(x))


def test_registry_docstring_examples() -> None:
    from privacy_lit.baselines import registry

    result = doctest.testmod(registry)
    assert result.attempted > 0 and result.failed == 0


def test_registry_options_and_unknown_names() -> None:
    assert build_baseline("blacken", margin=0.0).margin == 0.0
    assert build_baseline("blur_strong").sigma_fraction > build_baseline("blur_weak").sigma_fraction
    assert baseline_label("blur_weak") == "Obf-WeakBlur"
    with pytest.raises(ValueError, match="unknown baseline 'blur'") as err:
        build_baseline("blur")
    for name in BASELINE_NAMES:  # the error lists every valid name
        assert name in str(err.value)
    with pytest.raises(TypeError, match="takes no options"):
        build_baseline("raw", margin=0.1)
